"""Locust load test of the KATO HTTP API (run headless with loadtest/run.sh).

Each simulated user opens its own session on one shared node, then loops:
observe one event (1-5 seeded symbols from the benchmark corpus vocabulary),
learn after every ``KATO_LEARN_EVERY`` observes (default 10), ask for
predictions after every ``KATO_PREDICT_EVERY`` observes (default 5). Requests are
reported per route with the session id folded out of the name
(``POST /sessions/[id]/observe``). Users wait ``KATO_WAIT_S`` seconds between
requests (default 0: closed loop, as fast as the server answers).

The run's exit status is 1 when any request failed (error rate > 0), whatever
locust's own ``--exit-code-on-error`` says.

Environment: ``KATO_NODE`` (default ``loadtest``), ``KATO_LEARN_EVERY``,
``KATO_PREDICT_EVERY``, ``KATO_WAIT_S``, ``KATO_SEED`` (default 1).
"""

from __future__ import annotations

import itertools
import os
import random

from locust import FastHttpUser, constant, events, task

NODE = os.environ.get("KATO_NODE", "loadtest")
LEARN_EVERY = int(os.environ.get("KATO_LEARN_EVERY", "10"))
PREDICT_EVERY = int(os.environ.get("KATO_PREDICT_EVERY", "5"))
SEED = int(os.environ.get("KATO_SEED", "1"))
VOCABULARY = 5000  # bench/corpus.py's vocabulary, so predictions find learned patterns

_user_ids = itertools.count()


class KatoUser(FastHttpUser):
    """One client: its own session, a stream of observations, periodic learn and predictions."""

    wait_time = constant(float(os.environ.get("KATO_WAIT_S", "0")))

    def on_start(self) -> None:
        self.rng = random.Random(SEED * 100_003 + next(_user_ids))
        self.observed = 0
        self.session_id = None
        with self.client.post("/sessions", json={"node_id": NODE}, name="POST /sessions",
                              catch_response=True) as resp:
            if resp.status_code == 200:
                self.session_id = resp.json()["session_id"]
            else:
                resp.failure(f"create session: {resp.status_code}")

    def on_stop(self) -> None:
        if self.session_id:
            self.client.delete(f"/sessions/{self.session_id}", name="DELETE /sessions/[id]")

    def _event(self) -> list[str]:
        return sorted({f"s{self.rng.randrange(VOCABULARY)}" for _ in range(self.rng.randint(1, 5))})

    @task
    def stream(self) -> None:
        if self.session_id is None:
            self.on_start()
            return
        base = f"/sessions/{self.session_id}"
        self.client.post(f"{base}/observe", json={"strings": self._event()}, name="POST /sessions/[id]/observe")
        self.observed += 1
        if PREDICT_EVERY and self.observed % PREDICT_EVERY == 0:
            self.client.get(f"{base}/predictions", name="GET /sessions/[id]/predictions")
        if LEARN_EVERY and self.observed % LEARN_EVERY == 0:
            self.client.post(f"{base}/learn", name="POST /sessions/[id]/learn")


@events.quitting.add_listener
def _fail_on_errors(environment, **_kwargs) -> None:
    total = environment.stats.total
    if total.num_failures > 0:
        print(f"loadtest: {total.num_failures} of {total.num_requests} requests failed "
              f"(error rate {total.fail_ratio:.4%})")
        environment.process_exit_code = 1
    elif total.num_requests == 0:
        print("loadtest: no request was made")
        environment.process_exit_code = 1
    else:
        environment.process_exit_code = 0
