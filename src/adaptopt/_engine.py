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

__all__ = ["Snapshot", "Plan", "Work", "sorted_spans", "same_layout", "layout_of"]


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

    def kernel_args(self, h, t, s):
        """(flags, scalars in kernel order) of step t under h (resolved);
        the flags include the step's own (Spec.step_flags: RAdam's rectified)."""
        if self.scheduled:
            flags, scal = self.spec.fixed_scalars(h)
        else:
            flags, scal = self.flags, list(self.fixed)
        for pos, value in zip(self.positions, self.spec.per_step(h, t, s)):
            scal[pos] = value
        return flags | self.spec.step_flag_bits(h, t, s), scal


def same_layout(layout, groups):
    """The param groups hold the same dicts, lists and parameters as when
    layout = layout_of(groups) was taken."""
    glist, gdicts, plists, items = layout
    if groups is not glist or not _kernels.same_items(groups, gdicts):
        return False
    for g, pl, snap in zip(gdicts, plists, items):
        if g.get("params") is not pl or not _kernels.same_items(pl, snap):
            return False
    return True


def layout_of(groups):
    gdicts = list(groups)
    plists = [g["params"] for g in gdicts]
    return (groups, gdicts, plists, [list(pl) for pl in plists])


class Work:
    """What a batch computes its scalars from: its group's snapshot, the step
    t its rows take next, their scalar state s (a dict, or None) and extra
    kernel flags (SGD's first momentum step)."""

    __slots__ = ("snap", "t", "s", "extra", "h")

    def __init__(self, snap, t, s, extra=0, h=None):
        self.snap, self.t, self.s, self.extra = snap, t, s, extra
        self.h = h  # the step's resolved hyperparameters when already evaluated


class Plan:
    """The kernel calls of one step shape (which parameters have gradients):
    the compiled Batches, a Work each, and the memory they write."""

    __slots__ = ("batches", "work", "spans")

    def __init__(self, spans):
        self.batches, self.work, self.spans = [], [], spans

    def add(self, batch, work):
        self.batches.append(batch)
        self.work.append(work)

    def resync(self, read, counters):
        """Take each batch's step and scalar state from its rows (read(batch)
        gives them, or None when the rows disagree): a plan stays usable when
        other plans have stepped some of its parameters (subsets of
        parameters with gradients).  False when a batch would need splitting."""
        for b, w in zip(self.batches, self.work):
            now = read(b)
            if now is None:
                return False
            w.t, w.s = now
            counters(b, w, w.s)
        return True

    def prepare(self):
        """Each batch's (h, flags, scalars, new scalar state) for its next
        step.  Python code (an lr schedule) runs here, before anything is
        written, so an exception leaves everything as it was."""
        out = []
        for w in self.work:
            spec = w.snap.spec
            h = w.snap.resolved(w.t) if w.h is None else w.h
            w.h = None
            flags, scal = w.snap.kernel_args(h, w.t, w.s)
            new_s = spec.advance(h, w.t, w.s) if spec.advance else None
            out.append((h, flags | w.extra, scal, new_s))
        return out

    def run(self, prepared, n_threads, counters):
        """Set each batch's scalars and counters, then run every kernel and
        write every counter in one compiled call.

        counters(batch, work, new_s) sets what the rows must hold (step
        work.t - 1, scalar state work.s) and get (work.t, new_s); after the
        step it is called again, so that the next check expects the new values."""
        for b, w, (h, flags, scal, new_s) in zip(self.batches, self.work, prepared):
            b.set_scalars(flags, scal)
            counters(b, w, new_s)
        _kernels.run(self.batches, n_threads)
        for b, w, (h, flags, scal, new_s) in zip(self.batches, self.work, prepared):
            w.t += 1
            w.s = new_s
            w.extra = 0  # SGD's first momentum step is taken
            counters(b, w, new_s)
