"""The engine under both front ends (``adaptopt`` and ``adaptopt.torch``).

It knows which memory the kernels may touch.  A front end hands it rows —
a parameter, its state dict and its state buffers, already validated with
the front end's own error messages — and it builds the kernel calls of a
step (``_kernels.Batch``: the pointer table, with a reference to every
array in it), the sorted spans of memory a step writes (no gradient may
overlap them), the kernel's flags and scalars from the algorithm's Spec, and
runs the step.  Every later step re-checks the plan in compiled code
(``Batch.check_numpy`` / ``check_torch``) before a kernel runs.
"""

import bisect

from . import _kernels
from ._checks import nonneg

__all__ = ["Snapshot", "Plan", "Work", "Rows", "sorted_spans", "same_layout", "layout_of"]


class Spans:
    """Sorted, disjoint memory spans with labels; find() names an overlap."""

    __slots__ = ("compiled", "starts", "ends", "labels")

    def __init__(self, spans):
        self.starts = [s for s, _, _ in spans]
        self.ends = [e for _, e, _ in spans]
        self.labels = [w for _, _, w in spans]
        self.compiled = _kernels.Spans(self.starts, self.ends)

    def find(self, start, end):
        """The label of a span [start, end) overlaps, or None."""
        if end <= start:
            return None
        k = bisect.bisect_left(self.starts, end)  # the spans starting before end
        if k and self.ends[k - 1] > start:
            return self.labels[k - 1]
        return None


def sorted_spans(spans, what="share memory"):
    """spans: (start, end, label[, obj]); empty ones are left out.  Raises
    ValueError naming two that overlap; else the sorted Spans."""
    spans = sorted((s for s in spans if s[1] > s[0]), key=lambda s: (s[0], s[1]))
    for a, b in zip(spans, spans[1:]):
        if b[0] < a[1]:
            same = len(a) > 3 and len(b) > 3 and a[3] is b[3]
            first, second = sorted((a[2], b[2]), key=_label_order)
            raise ValueError(f"{first} and {second} {what}"
                             + (" (the same array twice)" if same else ""))
    return Spans([s[:3] for s in spans])


def _label_order(label):
    return (not str(label).startswith("param"), str(label))


def _freeze_list(v):
    return tuple(v) if isinstance(v, list) else None


class Snapshot:
    """A group's hyperparameters as checked at one moment.

    holds(group) tells, in compiled code, whether the group still holds the
    same value objects (a mutable value — a list, a tensor — also the same
    contents, through freeze); only then are the checked values and the
    kernel's step-independent scalars reused.  Nothing is written back into
    the group, so an edit made while a step runs is never lost: the next
    step sees it.  clean(group) gives the dict the Spec checks (a front end's
    translation of its own values)."""

    __slots__ = ("group", "keys", "values", "frozen", "freeze", "size", "hyper", "flags",
                 "fixed", "positions", "spec", "scheduled")

    def __init__(self, spec, group, owner, clean=None, freeze=_freeze_list):
        self.spec, self.group, self.freeze = spec, group, freeze
        self.keys = tuple(k for k in spec.hyper if k in group)
        self.values = tuple(group[k] for k in self.keys)
        self.frozen = [(i, f) for i, f in enumerate(map(freeze, self.values)) if f is not None]
        self.size = len(group)
        self.hyper = spec.checked(group if clean is None else clean(group), owner)
        self.scheduled = callable(self.hyper["lr"])
        self.positions = spec.step_positions()
        self.flags = self.fixed = None
        if not self.scheduled:
            self.flags, self.fixed = spec.fixed_scalars(self.hyper)

    def holds(self, group):
        if not (group is self.group and len(group) == self.size
                and _kernels.same_values(group, self.keys, self.values)):
            return False
        for i, f in self.frozen:
            if self.freeze(self.values[i]) != f:
                return False
        return True

    def resolved(self, t):
        """The hyperparameters of step t: a schedule's lr evaluated (checked)."""
        h = self.hyper
        if not self.scheduled:
            return h
        value = h["lr"](t)
        try:
            value = nonneg("lr", value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"the lr schedule returned {value!r} at step {t}: {e}") from None
        return {**h, "lr": value}


same_layout = _kernels.same_layout  # compiled: the fast paths check the same way


def layout_of(groups):
    gdicts = list(groups)
    plists = [g["params"] for g in gdicts]
    return (groups, gdicts, plists, [list(pl) for pl in plists])


class Work:
    """What a batch computes its scalars from: its group's snapshot, its rows'
    scalar state s (a dict, or None), extra kernel flags (SGD's first
    momentum step) and, when the general path has evaluated them, the step's
    hyperparameters h.  The step itself is the batch's (Batch.t)."""

    __slots__ = ("snap", "s", "extra", "h", "next_s")

    def __init__(self, snap, s, extra=0, h=None):
        self.snap, self.s, self.extra, self.h, self.next_s = snap, s, extra, h, None


class Plan:
    """The kernel calls of one step shape (which parameters have gradients):
    the compiled Batches, a Work each, and the memory they write.

    counters(batch, work, new_s) sets a batch's scalar-state counters (what
    its rows hold, work.s, and get, new_s), for algorithms that keep some."""

    __slots__ = ("batches", "work", "spans", "counters", "layout", "snaps", "snaps_of",
                 "common", "rows")

    def __init__(self, counters):
        self.batches, self.work, self.spans, self.counters = [], [], None, counters
        self.layout = None  # layout_of(the param groups) the plan was made for
        self.snaps, self.snaps_of, self.common, self.rows = [], [], True, 0

    def add(self, batch, work):
        self.rows += batch.n
        self.batches.append(batch)
        self.work.append(work)
        self.snaps_of.append(work.snap)
        if work.snap not in self.snaps:
            self.snaps.append(work.snap)
        if work.s is not None:
            self.counters(batch, work, work.s)
        self.common = False  # until the first step has run (Plan.step)

    def resync(self, read):
        """Take each batch's step and scalar state from its rows (read(batch)
        gives them, or None when the rows disagree): a plan stays usable when
        other plans have stepped some of its parameters (subsets of
        parameters with gradients).  False when a batch would need splitting."""
        for b, w in zip(self.batches, self.work):
            now = read(b)
            if now is None:
                return False
            b.t, w.s = now
            if w.s is not None:
                self.counters(b, w, w.s)
        return True

    def step(self, n_threads, scale=None):
        """One step: each batch's flags and scalars (Python code, an lr
        schedule, runs here, before anything is written, so an exception
        changes nothing), then every kernel and counter in one compiled call.
        scale: the gradients' scaling (_kernels.run), or None."""
        if self.common:
            _kernels.plan_step(self, n_threads, scale)
            return
        for b, w in zip(self.batches, self.work):
            snap = w.snap
            spec = snap.spec
            if w.h is None and not snap.scheduled and w.s is None and not spec.has_step_flags:
                b.set_scalars(snap.flags | w.extra, snap.fixed, snap.positions,
                              spec.per_step(snap.hyper, b.t, None))
                continue
            h = snap.resolved(b.t) if w.h is None else w.h
            w.h = None
            flags, fixed = spec.fixed_scalars(h) if snap.scheduled else (snap.flags, snap.fixed)
            flags |= spec.step_flag_bits(h, b.t, w.s)  # RAdam's rectified step, ASGD's average
            b.set_scalars(flags | w.extra, fixed, snap.positions, spec.per_step(h, b.t, w.s))
            if w.s is not None:
                w.next_s = spec.advance(h, b.t, w.s)
                self.counters(b, w, w.next_s)
        _kernels.run(self.batches, n_threads, scale)
        for b, w in zip(self.batches, self.work):
            w.extra = 0  # SGD's first momentum step is taken
            if w.s is not None:
                w.s = w.next_s
                self.counters(b, w, w.s)
        self.common = all(w.s is None and not w.snap.scheduled and not w.snap.spec.has_step_flags
                          for w in self.work)


class Rows:
    """One-parameter batches, for steps over changing subsets of parameters.

    A plan is cached per step shape (which parameters have gradients); when
    that set changes every step (a mixture of experts: a random 4 of 64), a
    new plan would be built, with every parameter validated, each step.
    Instead, the front end keeps here a Batch of one row (and its Work) per
    parameter, and plan(keys) assembles a step's plan from the rows of the
    parameters with gradients: each row is re-checked in compiled code every
    step like any batch (so a stale row only fails its check), its step and
    scalar state taken from its state (Plan.resync), its scalars computed
    per row.  spans: every parameter and every state buffer of the cached
    rows, as of the last refresh (the memory any such step may write).
    layout: the param groups' layout the rows were made for.  wanted: a
    plan was asked for and a row was missing or stale: the next full
    validation should (re)build the rows of the parameters it steps."""

    __slots__ = ("rows", "layout", "spans", "wanted")

    def __init__(self):
        self.rows, self.layout, self.spans, self.wanted = {}, None, None, False

    def plan(self, keys, layout, counters):
        """A Plan of the rows of keys, or None (then wanted is set)."""
        if layout is not self.layout or self.spans is None:
            self.wanted = True
            return None
        rows, plan = self.rows, Plan(counters)
        for k in keys:
            r = rows.get(k)
            if r is None:
                self.wanted = True
                return None
            plan.add(*r)
        plan.spans, plan.layout = self.spans, layout
        return plan

    def refresh(self, layout, new, fresh, spans):
        """After a full validation: the rows in new ({key: (batch, work)})
        added, those fresh(key, batch) rejects dropped, spans() the memory
        of every parameter and state buffer."""
        if self.layout is None or not same_layout(self.layout, layout[0]):
            self.rows = {}  # other parameters (a layout object of the same ones keeps them)
        self.rows.update(new)
        self.rows = {k: r for k, r in self.rows.items() if fresh(k, r[0])}
        self.layout, self.wanted = layout, False
        try:
            self.spans = spans()
        except ValueError:  # state the step did not validate overlaps: no rows until it is fixed
            self.rows, self.spans = {}, None
