"""The data-level hook `Method.epoch_batches`: a method owns the order and the composition of an epoch's
batches; the default is the loop's own seeded shuffle, unchanged."""

from __future__ import annotations

import pytest
import torch
from tiny import smoke_config

from bench.methods import REGISTRY, Method, register
from bench.train import train_run

torch.set_num_threads(1)


class _Recorder(Method):
    """Plain training that records, per epoch, the default batches it was offered and the batches it saw."""

    name = "test_epoch_recorder"
    offered: list[list[list[int]]] = []
    seen: list[list[int]] = []

    def epoch_batches(self, model, state, default):
        type(self).offered.append([rows.tolist() for rows in default])
        return self.reorder(default, state)

    def reorder(self, default, state):
        return default

    def loss(self, model, batch, state):
        type(self).seen.append(batch.index.tolist())
        return super().loss(model, batch, state)


class _Reversed(_Recorder):
    """The default batches in reverse order, each batch's rows reversed too."""

    name = "test_epoch_reversed"

    def reorder(self, default, state):
        return [rows.flip(0) for rows in reversed(default)]


class _Composed(_Recorder):
    """Its own composition: one epoch of batches of 5 rows drawn from the method's seeded generator,
    rows 0..9 only (a curriculum-like subset), repeated rows allowed."""

    name = "test_epoch_composed"

    def reorder(self, default, state):
        draws = torch.randint(0, 10, (3, 5), generator=state.epoch_generator())
        return list(draws)


class _Broken(_Recorder):
    name = "test_epoch_broken"

    def reorder(self, default, state):
        return [torch.tensor([0, 10_000])]


@pytest.fixture
def registered():
    classes = (_Recorder, _Reversed, _Composed, _Broken)
    for cls in classes:
        register(cls)
        cls.offered, cls.seen = [], []
    yield
    for cls in classes:
        REGISTRY.pop(cls.name)


def _cfg(method: str, **fields):
    return smoke_config(**{"method": method, "max_epochs": 2, "batch_size": 16, **fields})


def test_the_default_is_the_loop_shuffle_and_trains_bit_identically_to_concat(tiny, registered) -> None:
    recorded = train_run(_cfg("test_epoch_recorder"), dataset=tiny)
    concat = train_run(_cfg("concat"), dataset=tiny)
    assert recorded.metrics == concat.metrics
    for key, value in concat.state_dict.items():
        assert torch.equal(recorded.state_dict[key], value), key
    # the default is the seeded shuffle cut every batch_size: 64 rows -> 4 batches of 16 per epoch
    first = _Recorder.offered[0]
    assert [len(rows) for rows in first] == [16, 16, 16, 16]
    assert sorted(r for rows in first for r in rows) == list(range(64))
    assert _Recorder.offered[1] != first  # drawn anew every epoch
    assert _Recorder.seen == [rows for epoch in _Recorder.offered for rows in epoch]


def test_a_method_that_reverses_the_order_trains_on_the_order_it_asked_for(tiny, registered) -> None:
    result = train_run(_cfg("test_epoch_reversed"), dataset=tiny)
    assert result.status == "ok"
    expected = [list(reversed(rows)) for epoch in _Reversed.offered for rows in reversed(epoch)]
    assert _Reversed.seen == expected
    # the default it reversed is the same shuffle the recorder gets (the shuffle does not depend on the method)
    train_run(_cfg("test_epoch_recorder"), dataset=tiny)
    assert _Recorder.offered == _Reversed.offered


def test_own_composition_sets_the_step_count_and_repeats_for_the_same_seed(tiny, registered) -> None:
    first = train_run(_cfg("test_epoch_composed"), dataset=tiny)
    seen_first = list(_Composed.seen)
    assert len(seen_first) == 6 and all(len(rows) == 5 and max(rows) < 10 for rows in seen_first)
    assert seen_first[:3] != seen_first[3:]  # the generator is seeded by the epoch too
    lr_rows = [row for row in first.trajectory if row["series"] == "lr"]
    assert [row["step"] for row in lr_rows] == [3, 6]  # 3 optimizer steps per epoch, not 4
    _Composed.seen = []
    second = train_run(_cfg("test_epoch_composed"), dataset=tiny)
    assert _Composed.seen == seen_first
    assert second.metrics == first.metrics and second.trajectory == first.trajectory
    _Composed.seen = []
    train_run(_cfg("test_epoch_composed", seed=1), dataset=tiny)
    assert _Composed.seen != seen_first


def test_step_every_groups_count_the_method_batches(tiny, registered) -> None:
    result = train_run(_cfg("test_epoch_composed", step_every=2), dataset=tiny)
    lr_rows = [row for row in result.trajectory if row["series"] == "lr"]
    assert [row["step"] for row in lr_rows] == [2, 4]  # 3 batches: a group of 2, then a short group of 1


def test_rows_outside_the_split_are_refused_naming_the_method(tiny, registered) -> None:
    with pytest.raises(ValueError, match="test_epoch_broken.*outside"):
        train_run(_cfg("test_epoch_broken"), dataset=tiny)
