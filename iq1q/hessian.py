"""Hessian-aware quantization: `iq1q.quantize(w, fmt, hessian=H)` (docs/quantizer.md).

The output error of a linear layer y = x W' on inputs X is tr((W - Q) H (W - Q)') with
H = X'X, the Hessian of the layer's squared output error. ik_llama.cpp's quantizer (and
iq1q's plain one) weighs each weight's error by diag(H) (the importance matrix) and each
block on its own; this one uses all of H, with GPTQ's error feedback on the IQ1 grids and
coordinate descent on the exact objective (kernels/ref_gptq.h). What depends on H alone is
computed here once per matrix, in float64 numpy: the damping, the block order, U (the upper
Cholesky factor of the inverse of the permuted H), and per group of 8 columns its 8x8
metrics and the tables e'Me over the 2048 grid entries. The rows then run natively on the
thread pool; results do not depend on the thread count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _ref
from .formats import Format

DELTA = 0.125  # the grid's shift (docs/spec.md §6)
# relative asymmetry |H - H'| / max |H| accepted (sums of float32 products are not exactly symmetric)
SYMMETRY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class HessianOptions:
    """How `quantize(..., hessian=H)` works (defaults measured on Gemma 3 270M, docs/quantizer.md).

    damping: added to the diagonal as a fraction of its mean (regularises a Hessian from few
        tokens; 0.01 over-fits).
    shrink: the off-diagonal entries are scaled by 1 - shrink (a Hessian from few tokens
        overstates the correlations between inputs; 0.1 lowered the held-out error a little).
    passes: GPTQ passes (each from the scales the previous one ended with); 0 keeps only the
        polished plain solution.
    sweeps: coordinate-descent sweeps on the exact objective after each pass.
    candidates: block multipliers tried with error feedback per block, nearest to a first guess
        (0: all of them).
    order: visit blocks by decreasing diag(H) (GPTQ's "act order" at block granularity) rather
        than left to right.
    metric: the error a group's grid index minimises in the GPTQ pass: "conditional" (the exact
        GPTQ error given the columns already fixed) or "diagonal" (diag(H) weights).
    """

    damping: float = 0.1
    shrink: float = 0.1
    passes: int = 1
    sweeps: int = 3
    candidates: int = 2
    order: bool = True
    metric: str = "conditional"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.damping) and self.damping >= 0):
            raise ValueError(f"damping must be a finite non-negative number, got {self.damping!r}")
        if not (0 <= self.shrink <= 1):
            raise ValueError(f"shrink must be in [0, 1], got {self.shrink!r}")
        for name in ("passes", "sweeps", "candidates"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        if self.metric not in ("conditional", "diagonal"):
            raise ValueError(f"metric must be 'conditional' or 'diagonal', got {self.metric!r}")


def grid() -> np.ndarray:
    """The IQ1 grid, 2048 x 8 values in {-1, 0, 1} (docs/spec.md §3)."""
    g = np.empty((2048, 8), np.int8)
    _ref.grid_values(g)
    return g


_GRID: np.ndarray | None = None


def _grid64() -> np.ndarray:
    global _GRID
    if _GRID is None:
        _GRID = grid().astype(np.float64)
    return _GRID


def check_hessian(hessian, k: int) -> np.ndarray:
    """H as a symmetric float64 K x K array, after checking shape, values and symmetry."""
    h = np.asarray(hessian)
    if h.dtype not in (np.float16, np.float32, np.float64):
        raise TypeError(f"hessian must be float16, float32 or float64, got dtype {h.dtype}")
    if h.shape != (k, k):
        raise ValueError(f"hessian must be {k} x {k} (row length squared), got shape {h.shape}")
    h = h.astype(np.float64)
    if not np.isfinite(h).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(h))[0])
        raise ValueError(f"NaN or Inf in hessian (first at index {bad})")
    scale = float(np.abs(h).max()) if h.size else 0.0
    if not scale > 0:
        raise ValueError("hessian is all zeros (the layer saw no input): quantize without it")
    asym = float(np.abs(h - h.T).max())
    if asym > SYMMETRY_TOLERANCE * scale:
        raise ValueError(f"hessian is not symmetric: max |H - H'| = {asym:.3g} is more than "
                         f"{SYMMETRY_TOLERANCE:g} of max |H| = {scale:.3g}")
    d = np.diag(h)
    if d.min() < -SYMMETRY_TOLERANCE * scale:
        i = int(np.argmin(d))
        raise ValueError(f"hessian has a negative diagonal entry H[{i}, {i}] = {d[i]:.3g}: not positive "
                         "semi-definite")
    return (h + h.T) * 0.5


def _inverse_cholesky_upper(h: np.ndarray) -> np.ndarray:
    """U upper triangular with inverse(h) = U'U: U = R^-1 for h = R R' (R upper), R from the
    Cholesky factor of h with rows and columns reversed."""
    m = np.linalg.cholesky(h[::-1, ::-1])  # lower: J h J = M M'
    eye = np.eye(h.shape[0])
    minv = np.linalg.solve(m, eye)
    return np.triu(minv[::-1, ::-1])


def _quadratic_tables(metrics: np.ndarray) -> np.ndarray:
    """(groups, 2, 2048): e'Me for e = grid entry + s * delta, s = +1 then -1."""
    g = _grid64()
    out = np.empty((metrics.shape[0], 2, 2048), np.float32)
    for si, s in enumerate((1.0, -1.0)):
        e = g + s * DELTA  # (2048, 8)
        for a in range(0, metrics.shape[0], 64):  # 64 groups at a time: a bounded temporary
            em = np.einsum("kj,gjl->gkl", e, metrics[a:a + 64])
            out[a:a + 64, si] = np.einsum("gkl,kl->gk", em, e)
    return out


def _diagonal_blocks(m: np.ndarray) -> np.ndarray:
    """(K/8, 8, 8): the 8 x 8 blocks on m's diagonal."""
    idx = np.arange(m.shape[0]).reshape(-1, 8)
    return m[idx[:, :, None], idx[:, None, :]]


@dataclass
class Prepared:
    """What the native quantizer needs from H (kernels/ref_gptq.h, iq1q_gptq_problem)."""

    H: np.ndarray      # K x K damped, float32
    U: np.ndarray      # K x K float32
    perm: np.ndarray   # K int32
    T: np.ndarray      # K/8 x 8 x 8
    A: np.ndarray      # K/8 x 8 x 8
    QA: np.ndarray     # K/8 x 2 x 2048
    QH: np.ndarray     # K/8 x 2 x 2048
    imp: np.ndarray    # K
    diag: np.ndarray   # K: diag of the undamped H (the plain quantizer's importance)


def prepare(hessian, k: int, fmt: Format, options: HessianOptions) -> Prepared:
    """Everything derived from H (K x K) alone; ValueError for a Hessian that cannot be used."""
    h = check_hessian(hessian, k)
    diag = np.clip(np.diag(h), 0, None)
    hd = h * (1.0 - options.shrink)
    hd[np.diag_indices(k)] = np.diag(h) + options.damping * diag.mean()
    bs = 32 if fmt.name.startswith("iq1_s") else 16  # columns per block multiplier
    if options.order:  # blocks by decreasing importance; ties keep their order
        order = np.argsort(-diag.reshape(-1, bs).sum(axis=1), kind="stable")
    else:
        order = np.arange(k // bs)
    perm = (order[:, None] * bs + np.arange(bs)).reshape(-1)
    hp = hd[np.ix_(perm, perm)]
    try:
        u = _inverse_cholesky_upper(hp)
    except np.linalg.LinAlgError:
        raise ValueError(f"hessian is not positive semi-definite (its Cholesky factorisation fails even "
                         f"with damping {options.damping:g} x mean diagonal)") from None
    uinv = np.linalg.inv(_diagonal_blocks(u))  # upper triangular U_gg^-1
    t = np.tril(np.transpose(uinv, (0, 2, 1)))  # U_gg^-T
    if options.metric == "conditional":
        a = uinv @ np.transpose(uinv, (0, 2, 1))  # (U_gg' U_gg)^-1: the GPTQ error of a group
    else:
        a = np.zeros((k // 8, 8, 8))
        di = np.diag(hp).reshape(-1, 8)
        a[:, np.arange(8), np.arange(8)] = di
    hblocks = _diagonal_blocks(hd)
    return Prepared(H=np.ascontiguousarray(hd, np.float32), U=np.ascontiguousarray(u, np.float32),
                    perm=perm.astype(np.int32), T=np.ascontiguousarray(t, np.float32),
                    A=np.ascontiguousarray(a, np.float32), QA=_quadratic_tables(a), QH=_quadratic_tables(hblocks),
                    imp=np.ascontiguousarray(np.diag(hp), np.float32), diag=diag.astype(np.float32))


@dataclass
class HessianResult:
    """Per row: the objective (w - q)' H (w - q) (damped H) of the plain quantizer's bytes and of
    the bytes written."""

    plain: np.ndarray
    final: np.ndarray

    @property
    def reduction(self) -> float:
        """1 - final / plain over the whole matrix."""
        p = float(self.plain.sum())
        return 1.0 - float(self.final.sum()) / p if p > 0 else 0.0


def run(x: np.ndarray, out: np.ndarray, fmt: Format, prep: Prepared, options: HessianOptions,
        threads: int) -> HessianResult:
    """Rewrite out (the plain quantizer's bytes of x) in place; see kernels/ref_gptq.h."""
    cost = np.zeros((x.shape[0], 2), np.float64)
    _ref.quantize_gptq(fmt.id, x, out, prep.H, prep.U, prep.perm, prep.T, prep.A, prep.QA, prep.QH, prep.imp,
                       cost, options.passes, options.sweeps, options.candidates, threads)
    return HessianResult(cost[:, 0].copy(), cost[:, 1].copy())


def output_error(w: np.ndarray, q: np.ndarray, hessian: np.ndarray) -> float:
    """tr((W - Q) H (W - Q)'): the summed squared output error over the inputs H was made of."""
    e = np.asarray(w, np.float64) - np.asarray(q, np.float64)
    return float(np.einsum("ij,ij->", e @ np.asarray(hessian, np.float64), e))


__all__ = ["HessianOptions", "HessianResult", "Prepared", "check_hessian", "grid", "output_error", "prepare", "run"]
