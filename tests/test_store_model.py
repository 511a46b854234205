"""Property test: random interleavings of store operations against a plain in-test reference model."""

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import engine

COLS = {"item_id": "int64", "action": "int32"}
USERS = st.integers(0, 4)


class Model:
    """Per user: a list of [seq, ts, item_id, action, sealed]."""

    def __init__(self):
        self.ev = {}

    def append(self, rows):
        out = []
        for u, ts, item, act in rows:
            lst = self.ev.setdefault(u, [])
            lst.append([len(lst), ts, item, act, False])
            out.append(len(lst) - 1)
        return out

    def seal(self, cutoff):
        changed = False
        for lst in self.ev.values():
            for e in lst:
                if e[4]:
                    continue
                if e[1] >= cutoff:
                    break
                e[4] = changed = True
        return changed

    def sealed_count(self, u):
        return sum(e[4] for e in self.ev.get(u, []))


class StoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.store = engine.UIHStore.create(self.dir / "s", columns=COLS, event_type_column="action")
        self.model = Model()
        self.version = 0
        self.item = 0

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(rows=st.lists(st.tuples(USERS, st.integers(0, 100)), min_size=1, max_size=8),
          act=st.integers(0, 3))
    def append(self, rows, act):
        full = []
        for u, ts in rows:
            self.item += 1
            full.append((u, ts, self.item, (self.item * 7 + act) % 4))
        got = self.store.append({"user_id": [r[0] for r in full], "ts": [r[1] for r in full],
                                 "item_id": [r[2] for r in full], "action": [r[3] for r in full]})
        assert got.tolist() == self.model.append(full)

    @rule(u=USERS, k=st.integers(0, 30), item=st.integers(-5, 5))
    def update(self, u, k, item):
        lst = self.model.ev.get(u, [])
        if k < len(lst) and not lst[k][4]:
            self.store.update({"user_id": [u], "seq": [k], "item_id": [item]})
            lst[k][2] = item
        else:
            with pytest.raises(engine.ImmutableError):
                self.store.update({"user_id": [u], "seq": [k], "item_id": [item]})

    @rule(cutoff=st.integers(0, 110))
    def seal(self, cutoff):
        changed = self.model.seal(cutoff)
        v = self.store.seal(cutoff)
        self.version += changed
        assert v == self.version

    @rule(full=st.booleans())
    def compact(self, full):
        from engine.serving._compaction import plan
        rows = [e["main"]["rows"] for e in self.store._manifest["segments"]]
        v = self.store.compact(full=full)
        first, stop = (0, len(rows)) if full else plan(rows)
        self.version += stop - first > 1
        assert v == self.version

    @rule()
    def reopen(self):
        self.store.close()
        self.store = engine.UIHStore.open(self.dir / "s")

    @rule(max_len=st.integers(1, 40))
    def snapshot(self, max_len):
        users = list(range(-1, 6))
        req = {"user_id": users, "request_ts": [1000] * len(users), "example_id": list(range(len(users)))}
        thin = self.store.snapshot(req).to_pydict()
        fat = self.store.snapshot(req, materialize=True, max_len=max_len).to_pydict()
        for i, u in enumerate(users):
            lst = self.model.ev.get(u, [])
            tail = [e for e in lst if not e[4]]
            assert thin["version"][i] == self.version
            assert thin["imm_hw"][i] == self.model.sealed_count(u)
            assert thin["tail_seq"][i] == [e[0] for e in tail]
            assert thin["tail_ts"][i] == [e[1] for e in tail]
            assert thin["tail_item_id"][i] == [e[2] for e in tail]
            assert thin["tail_action"][i] == [e[3] for e in tail]
            last = lst[-max_len:]
            assert fat["seq"][i] == [e[0] for e in last]
            assert fat["ts"][i] == [e[1] for e in last]
            assert fat["item_id"][i] == [e[2] for e in last]
            assert fat["action"][i] == [e[3] for e in last]
            assert fat["example_id"][i] == i

    @invariant()
    def version_matches(self):
        assert self.store.version == self.version


StoreMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
TestStoreModel = StoreMachine.TestCase
