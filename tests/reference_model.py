"""Test-only reference model of the KATO-compatible engine.

This module is used ONLY by the test suite (property tests compare the compiled
engine against it).  It implements /work/shared/spec/engine.md sections 1-3 and
5-8 literally, favouring clarity over speed:

* every stored pattern is a candidate (full scan, filter_pipeline assumed []);
* candidates are visited in ascending pattern-name order, ranking ties are broken
  by ascending name (engine.md W1 / 5);
* difflib.SequenceMatcher(None, a, b, autojunk=False) gives the matching blocks,
  a plain O(n*m) dynamic programme gives LCS lengths;
* all float sums are explicit left folds (builtin ``sum`` is avoided for floats
  because Python >= 3.12 uses compensated summation);
* the session's own configuration is honoured everywhere (CHOICEs D1, D2, D3).

Vectors are supported only while the knowledge base's vector store is empty
(the nearest-neighbour part of engine.md 1.3 is not modelled).
"""

import copy
import difflib
import hashlib
import json
import math
from collections import Counter

DEFAULT_CONFIG = {
    "max_pattern_length": 0,
    "persistence": 5,
    "recall_threshold": 0.1,
    "stm_mode": "CLEAR",
    "max_predictions": 100,
    "sort_symbols": True,
    "process_predictions": True,
    "use_token_matching": True,
    "fuzzy_token_threshold": 0.0,
    "rank_sort_algo": "potential",
    "affinity_emotive": None,
    "filter_pipeline": [],
}


# ----------------------------------------------------------------------------- helpers

def flat(events):
    return [s for ev in events for s in ev]


def lsum(values):
    """Left-fold float sum in iteration order."""
    total = 0.0
    for v in values:
        total = total + v
    return total


def sha1_hex(text):
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def lcs_length(a, b):
    """Longest common subsequence length (plain O(n*m) DP)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def fuzz_ratio(s1, s2):
    """RapidFuzz fuzz.ratio on Unicode code points."""
    total = len(s1) + len(s2)
    if total == 0:
        return 100.0
    indel_distance = total - 2 * lcs_length(s1, s2)
    return 100 * (1 - indel_distance / total)


def matching_blocks(a, b):
    """difflib matching blocks without junk/autojunk, sentinel removed."""
    blocks = difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks()
    return [(blk.a, blk.b, blk.size) for blk in blocks[:-1]]


def average_emotives(dicts):
    """Per key: left-fold sum over the dicts holding it / their count; first-seen key order."""
    values = {}
    for d in dicts:
        for key, value in d.items():
            values.setdefault(key, []).append(value)
    result = {}
    for key, vals in values.items():
        total = 0
        for v in vals:
            total = total + v
        result[key] = total / len(vals)
    return result


def accumulate_metadata(dicts):
    sets = {}
    for d in dicts:
        for key, value in d.items():
            sets.setdefault(key, set()).add(str(value))
    return {key: sorted(vals) for key, vals in sets.items()}


def entropy(counts, n):
    return -lsum((c / n) * math.log2(c / n) for c in counts.values()) if n else 0.0


def normalized_entropy(counts, n, total_symbols):
    if total_symbols <= 1 or not n:
        return 0.0
    return -lsum((c / n) * math.log(c / n, total_symbols) for c in counts.values())


def global_normalized_entropy(symbols, prob, total_symbols):
    if total_symbols <= 1:
        return 0.0
    return -lsum(prob(s) * math.log(prob(s), total_symbols) for s in symbols if prob(s) > 0)


# ----------------------------------------------------------------------------- knowledge base

class ReferenceKB:
    """One knowledge base: patterns {name: record}, symbol stats, totals, affinity, finalize data."""

    def __init__(self):
        self.patterns = {}                  # bare hash -> record (see pattern())
        self.symbol_frequency = {}          # s -> total count in learned patterns (re-learns included)
        self.pattern_member_frequency = {}  # s -> number of distinct patterns containing s (pmf)
        self.total_unique_patterns = 0
        self.total_pattern_frequencies = 0  # never incremented on re-learn (D6)
        self.total_symbols_in_patterns_frequencies = 0
        self.affinity = {}                  # s -> {emotive: running float sum}
        self.finalized = {}                 # name -> finalize-training metrics (3.8)
        self.stored_vectors = 0             # vectors upserted into the (unmodelled) vector store

    def pattern(self, name):
        if name.startswith("PTRN|"):
            name = name[len("PTRN|"):]
        rec = self.patterns.get(name)
        return copy.deepcopy(rec) if rec is not None else None

    def learn(self, pattern_data, emotives, metadata_list, persistence):
        """engine.md 2.1-2.3; returns 'PTRN|hash' or '' (length < 2)."""
        pattern_data = [list(ev) for ev in pattern_data]
        symbols = flat(pattern_data)
        length = len(symbols)
        if length < 2:
            return ""
        name = sha1_hex(str(pattern_data))
        emotives = copy.deepcopy(list(emotives))
        metadata = accumulate_metadata(metadata_list)
        rec = self.patterns.get(name)
        if rec is None:
            self.patterns[name] = {
                "name": name, "pattern_data": pattern_data, "length": length, "frequency": 1,
                "emotives": emotives[-persistence:], "metadata": metadata,
            }
            for s in Counter(symbols):
                self.pattern_member_frequency[s] = self.pattern_member_frequency.get(s, 0) + 1
            self.total_unique_patterns += 1
            self.total_pattern_frequencies += 1
        else:
            rec["frequency"] += 1
            if emotives or metadata:
                rec["emotives"] = (rec["emotives"] + emotives)[-persistence:]
                merged = {}
                for key in list(rec["metadata"]) + list(metadata):
                    merged[key] = sorted(set(rec["metadata"].get(key, [])) | set(metadata.get(key, [])))
                rec["metadata"] = merged
        for s, c in Counter(symbols).items():
            self.symbol_frequency[s] = self.symbol_frequency.get(s, 0) + c
        self.total_symbols_in_patterns_frequencies += length
        if emotives:
            avg = average_emotives(emotives)
            for s in Counter(symbols):
                aff = self.affinity.setdefault(s, {})
                for key, value in avg.items():
                    aff[key] = aff.get(key, 0.0) + value
        return "PTRN|" + name

    def probability(self, s):
        """pmf(s) / U for a known symbol, else 0."""
        u = self.total_unique_patterns
        if s not in self.pattern_member_frequency or u == 0:
            return 0.0
        return self.pattern_member_frequency[s] / u

    def finalize_training(self):
        total_symbols = len(self.symbol_frequency)
        for name, rec in self.patterns.items():
            x = flat(rec["pattern_data"])
            counts = Counter(x)  # first-occurrence order
            self.finalized[name] = {
                "entropy": entropy(counts, len(x)),
                "normalized_entropy": normalized_entropy(counts, len(x), total_symbols),
                "global_normalized_entropy": global_normalized_entropy(counts, self.probability, total_symbols),
                "tf_vector": {s: c / len(x) for s, c in counts.items()},
            }
        return len(self.patterns)


# ----------------------------------------------------------------------------- session

class ReferenceSession:
    def __init__(self, kb, config=None):
        self.kb = kb
        self.config = dict(DEFAULT_CONFIG)
        self.config.update(config or {})
        if self.config.get("filter_pipeline"):
            raise NotImplementedError("filter_pipeline is not modelled")
        self.stm = []
        self.time = 0
        self.emotives_accumulator = []
        self.metadata_accumulator = []
        self.pending_vectors = []

    # -- observation / learning (1.2-1.5, 2.4, 2.5)

    def observe(self, strings=(), vectors=(), emotives=None, metadata=None):
        strings = list(strings)
        vectors = [list(v) for v in vectors]
        sort = self.config["sort_symbols"]
        string_part = sorted(strings) if sort else list(strings)
        vector_part = self._vector_symbols(vectors) if vectors else []
        if sort:
            vector_part = sorted(vector_part)
        learned, predictions = None, []
        if strings or vectors:
            self.stm.append(vector_part + string_part)
            if self.config["process_predictions"]:
                predictions = self._predict()["predictions"]
            learned = self._auto_learn()
        self.time += 1
        if emotives:
            self.emotives_accumulator.append(copy.deepcopy(dict(emotives)))
        if metadata:
            self.metadata_accumulator.append(copy.deepcopy(dict(metadata)))
        return {"auto_learned_pattern": learned, "stm": copy.deepcopy(self.stm),
                "time": self.time, "predictions": predictions}

    def _vector_symbols(self, vectors):
        if self.kb.stored_vectors:
            raise NotImplementedError("nearest-neighbour search over a non-empty vector store is not modelled")
        import numpy
        total = None
        for v in vectors:
            arr = numpy.array(v)
            total = arr if total is None else total + arr
        self.pending_vectors.extend(vectors)
        return ["VCTR|" + sha1_hex(str(total))]

    def _store(self, emotives, metadata_list):
        """Learn the whole STM (clearing it); pending vectors are flushed either way."""
        pattern_data = copy.deepcopy(self.stm)
        self.stm = []
        self.kb.stored_vectors += len(self.pending_vectors)
        self.pending_vectors = []
        return self.kb.learn(pattern_data, emotives, metadata_list, self.config["persistence"])

    def learn(self):
        if not self.stm:
            return ""
        return self._store(self.emotives_accumulator, self.metadata_accumulator)

    def _auto_learn(self):
        limit, length = self.config["max_pattern_length"], len(self.stm)
        if limit <= 0 or length < limit:
            return None
        if length > 1 and self.config["stm_mode"] == "ROLLING":
            w = limit - 1
            keep = self.stm[-w:] if length > w else self.stm[1:]
            keep = copy.deepcopy(keep)
            name = self._store([], [])  # D4: auto-learn stores no emotives / metadata
            self.stm = keep
        else:
            name = self._store([], [])
        return name or None

    def clear_stm(self):
        self.stm = []
        self.time = 0
        self.emotives_accumulator = []
        self.metadata_accumulator = []
        self.pending_vectors = []

    # -- predictions (3)

    def predictions(self):
        return self._predict()

    def _predict(self):
        state = flat(self.stm)
        if not state:
            return {"predictions": [], "future_potentials": []}
        if len(state) == 1:
            return {"predictions": self._predict_single(state[0]), "future_potentials": []}
        return self._predict_general(state)

    def _similarity(self, a, b):
        if self.config["use_token_matching"]:
            raw = ((2.0 * lcs_length(a, b)) / (len(a) + len(b))) * 100.0
            return raw / 100.0
        return fuzz_ratio(" ".join(a), " ".join(b)) / 100

    def _weight(self, s):
        aff = abs(self.kb.affinity.get(s, {}).get(self.config["affinity_emotive"], 0.0))
        freq = self.kb.symbol_frequency.get(s, 0)
        return aff / freq + 0.01 if aff > 0 and freq > 0 else 0.01

    def _weighted(self, matches, state, pattern_flat, present_flat, extras_flat):
        if self.config["affinity_emotive"] is None:
            return {"weighted_similarity": None, "weighted_evidence": None,
                    "weighted_confidence": None, "weighted_snr": None}
        w = lambda tokens: lsum(self._weight(s) for s in tokens)
        wm, ws, wa, wp, we = w(matches), w(state), w(pattern_flat), w(present_flat), w(extras_flat)
        div = lambda num, den: num / den if den != 0 else 0.0
        return {"weighted_similarity": div(2 * wm, ws + wa), "weighted_evidence": div(wm, wa),
                "weighted_confidence": div(wm, wp), "weighted_snr": div(wm, wm + we)}

    @staticmethod
    def _flat_split(pattern_flat, state, blocks):
        """engine.md 3.4: matches, past_flat, present_flat."""
        matches = [s for (_, j, n) in blocks for s in state[j:j + n]]
        if not blocks:
            return matches, [], list(pattern_flat)
        i0 = blocks[0][0]
        i1, _, n1 = blocks[-1]
        return matches, pattern_flat[:i0], pattern_flat[i0:i1 + n1]

    def _predict_single(self, x):
        """engine.md 3.9 (flat fields, no threshold, no ensemble metrics)."""
        out = []
        for name in sorted(self.kb.patterns):
            rec = self.kb.patterns[name]
            if rec["pattern_data"][0][0] != x:
                continue
            a, state = flat(rec["pattern_data"]), [x]
            if self.config["use_token_matching"]:
                similarity = 2.0 * lcs_length(a, state) / (len(a) + len(state))
            else:
                similarity = fuzz_ratio(" ".join(a), x) / 100
            blocks = matching_blocks(a, state)
            matches, past, present = self._flat_split(a, state, blocks)
            future = a[len(past) + len(present):]
            second = matching_blocks(present, state)
            used_a = {i + k for (i, _, n) in second for k in range(n)}
            used_b = {j + k for (_, j, n) in second for k in range(n)}
            missing = [s for i, s in enumerate(present) if i not in used_a]
            extras = [s for j, s in enumerate(state) if j not in used_b]
            m = len(matches)
            evidence = m / len(a) if a else 0.0
            confidence = m / len(present) if present else 0.0
            snr = m / (m + len(extras)) if m + len(extras) else 0.0
            fragmentation = len(blocks) - 1
            weighted = self._weighted(matches, state, a, present, extras)
            if self.config["affinity_emotive"] is not None:
                evidence_t, confidence_t, snr_t = (weighted["weighted_evidence"],
                                                   weighted["weighted_confidence"], weighted["weighted_snr"])
            else:
                evidence_t, confidence_t, snr_t = evidence, confidence, snr
            f = 0.0 if fragmentation == -1 else 1.0 / (fragmentation + 1)
            pred = {
                "name": name, "pattern_data": copy.deepcopy(rec["pattern_data"]), "length": rec["length"],
                "frequency": rec["frequency"] or 1, "emotives": average_emotives(rec["emotives"]),
                "matches": matches, "missing": missing, "present": present, "past": past,
                "future": future, "extras": extras, "similarity": similarity, "evidence": evidence,
                "confidence": confidence, "snr": snr, "fragmentation": fragmentation, "anomalies": [],
                "potential": (evidence_t + confidence_t) * snr_t + f,
            }
            pred.update(weighted)
            out.append(pred)
        out = sorted(out, key=lambda p: p["potential"], reverse=True)  # stable: ties by name
        return out[:self.config["max_predictions"]]

    def _fuzzy(self, pattern_flat, state):
        """engine.md 3.10: fuzzy matches, anomalies and flat extras count."""
        threshold = self.config["fuzzy_token_threshold"]
        matches, anomalies, extras = [], [], 0
        for token in state:
            best, best_score = None, None
            for p in pattern_flat:
                score = fuzz_ratio(token, p)
                if score / 100 >= threshold and (best_score is None or score > best_score):
                    best, best_score = p, score
            if best is None:
                extras += 1
                continue
            matches.append(token)
            if best != token:
                anomalies.append({"observed": token, "expected": best, "similarity": best_score / 100})
        return matches, anomalies, extras

    def _match_general(self, name, rec, state):
        """engine.md 3.3-3.6 for one candidate (None when below the threshold)."""
        threshold = self.config["recall_threshold"]
        pd = rec["pattern_data"]
        a = flat(pd)
        similarity = self._similarity(a, state)
        if similarity < threshold:
            return None
        blocks = matching_blocks(a, state)
        if not blocks and threshold > 0:
            return None
        matches, past_flat, present_flat = self._flat_split(a, state, blocks)
        extras_count = len(state) - sum(n for (_, _, n) in matching_blocks(present_flat, state))
        anomalies = []
        if self.config["fuzzy_token_threshold"] > 0:
            matches, anomalies, extras_count = self._fuzzy(a, state)
        # 3.5 event mapping
        c1, c2, e = len(past_flat), 0, 0
        while c2 < c1:
            c2 += len(pd[e])
            e += 1
        e1 = e
        past = pd[:e]
        c1 += len(present_flat)
        while c2 < c1:
            c2 += len(pd[e])
            e += 1
        present, future = pd[e1:e], pd[e:]
        if past and matches and matches[0] in past[-1]:
            present = [past[-1]] + present
            past = past[:-1]
        pres = flat(present)
        missing = [[s for s in ev if s not in matches] for ev in present]
        extras = [[s for s in ev if s not in pres] for ev in self.stm]
        m = len(matches)
        snr_den = 2.0 * m + extras_count
        pred = {
            "type": "prototypical", "name": name, "frequency": rec["frequency"] or 1,
            "matches": matches, "past": past, "present": present, "future": future,
            "missing": missing, "extras": extras, "anomalies": anomalies, "sequence": pd,
            "similarity": similarity,
            "evidence": m / rec["length"] if rec["length"] else 0.0,
            "confidence": m / len(pres) if pres else 0.0,
            "snr": (2.0 * m - extras_count) / snr_den if snr_den != 0 else 0.0,
            "fragmentation": float(len(blocks) - 1),
            "emotives": average_emotives(rec["emotives"]),
        }
        pred.update(self._weighted(matches, state, a, pres, flat(extras)))
        return copy.deepcopy(pred)

    def _predict_general(self, state):
        kb, cfg = self.kb, self.config
        cands = []
        for name in sorted(kb.patterns):  # candidate order C = ascending name
            pred = self._match_general(name, kb.patterns[name], state)
            if pred is not None:
                cands.append(pred)
        f_of = lambda p: 0.0 if p["fragmentation"] == -1 else 1.0 / (p["fragmentation"] + 1)
        limit = 3 * cfg["max_predictions"]
        if len(cands) > limit:  # top-K pruning, stable on ties; keep C in name order
            pre = lambda p: (p["evidence"] + p["confidence"]) * p["snr"] + f_of(p)
            kept = {p["name"] for p in sorted(cands, key=pre, reverse=True)[:limit]}
            cands = [p for p in cands if p["name"] in kept]

        u, f_total = kb.total_unique_patterns, kb.total_pattern_frequencies
        total_symbols = len(kb.symbol_frequency)
        cache = {}
        for p in cands:
            for s in p["matches"] + flat(p["missing"]):
                cache[s] = kb.probability(s)
        prob = lambda s: cache.get(s, 0.0)
        ensemble_freq = sum(p["frequency"] for p in cands)

        # itfdf_similarity vectors over the sorted vocabulary
        vocab = sorted(set(state).union(*[set(flat(p["present"])) for p in cands]))
        state_counts = Counter(state)
        sv = [prob(s) * state_counts[s] for s in vocab]
        sv_norm = math.sqrt(lsum(x * x for x in sv))

        # predictive-information groups (non-empty futures only), first-seen order
        groups = {}
        for p in cands:
            if not p["future"]:
                continue
            key = sha1_hex(json.dumps([sorted(ev) for ev in p["future"]], sort_keys=True))
            g = groups.setdefault(key, {"future": copy.deepcopy(p["future"]), "w": 0.0, "n": 0})
            g["w"] = g["w"] + p["frequency"] * p["similarity"]
            g["n"] += 1
        group_total = lsum(g["w"] for g in groups.values())
        for g in groups.values():
            g["agg"] = g["w"] / group_total if group_total != 0 else 0.0

        bayes_total = lsum(p["similarity"] * (p["frequency"] / ensemble_freq) for p in cands)

        for p in cands:
            pres, freq = flat(p["present"]), p["frequency"]
            pres_counts = Counter(pres)
            pv = [prob(s) * pres_counts[s] for s in vocab]
            dot = lsum(x * y for x, y in zip(pv, sv))
            denom = math.sqrt(lsum(x * x for x in pv)) * sv_norm
            cos = dot / denom if denom != 0 else 0.0
            distance = 1.0 if sv_norm == 0 else 1 - cos
            p["itfdf_similarity"] = 1 - (distance * freq / ensemble_freq) if ensemble_freq else 0.0

            peh = freq / f_total if f_total else 0.0
            if pres:
                log_sum = lsum(math.log10(prob(s) if prob(s) > 0 else 1e-10) for s in pres)
                p["confluence"] = peh * (1 - 10 ** log_sum)
            else:
                p["confluence"] = 0.0

            fin = kb.finalized.get(p["name"])
            if fin is not None:
                tf = fin["tf_vector"]
                p["entropy"] = fin["entropy"]
                p["normalized_entropy"] = fin["normalized_entropy"]
                p["global_normalized_entropy"] = fin["global_normalized_entropy"]
            else:
                tf = {s: c / len(pres) for s, c in pres_counts.items()}
                p["entropy"] = entropy(pres_counts, len(pres))
                p["normalized_entropy"] = normalized_entropy(pres_counts, len(pres), total_symbols)
                p["global_normalized_entropy"] = global_normalized_entropy(pres_counts, prob, total_symbols)
            if tf and u:
                terms = []
                for s, tf_s in tf.items():
                    n_s = max(int(prob(s) * u), 1) if s in cache else 1
                    terms.append(tf_s * (math.log2(u / n_s) + 1))
                p["tfidf_score"] = lsum(terms) / len(terms)
            else:
                p["tfidf_score"] = 0.0

            p["pattern_probability"] = freq / ensemble_freq
            p["weighted_strength"] = p["similarity"] * p["pattern_probability"]
            group = groups.get(sha1_hex(json.dumps([sorted(ev) for ev in p["future"]], sort_keys=True)))
            if p["future"] and group is not None and group["agg"] > 0:
                p["predictive_information"] = p["weighted_strength"] / group["agg"]
            else:
                p["predictive_information"] = 0.0
            prior = freq / ensemble_freq
            p["bayesian_prior"] = prior
            p["bayesian_likelihood"] = p["similarity"]
            p["bayesian_posterior"] = p["similarity"] * prior / bayes_total if bayes_total != 0 else 0.0
            if cfg["affinity_emotive"] is not None:
                ev, co, sn = p["weighted_evidence"], p["weighted_confidence"], p["weighted_snr"]
            else:
                ev, co, sn = p["evidence"], p["confidence"], p["snr"]
            p["potential"] = (ev + co) * sn + p["itfdf_similarity"] + f_of(p)

        key = cfg["rank_sort_algo"]
        ranked = sorted(cands, key=lambda p: p[key], reverse=True)  # stable: ties by name
        future_potentials = sorted(
            ({"future": g["future"], "aggregate_potential": g["agg"], "supporting_patterns": g["n"],
              "total_weighted_frequency": g["w"]} for g in groups.values()),
            key=lambda fp: fp["aggregate_potential"], reverse=True)
        return {"predictions": ranked[:cfg["max_predictions"]], "future_potentials": future_potentials}
