"""Where the shared specification lives (beside the checkout, or named by KATO_SPEC_DIR)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = Path(os.environ.get("KATO_SPEC_DIR", ROOT.parent / "shared" / "spec"))
EXAMPLES_FILE = SPEC_DIR / "engine-examples.json"
