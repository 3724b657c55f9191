"""Batched NMF (protolib's torch HALS and MU) against scikit-learn's NMF in a per-class loop.

Same features for everyone: EfficientNet-Lite0 features of the first 60 train images of each of the
10 classes, A_c = features clamped at 0 reshaped to (60*7*7, 1280). Same k, tol=1e-4, max_iter=200.
scikit-learn runs twice: (a) its own random init (random_state=0) and (b) init="custom" with exactly
our initial E, P (``protolib.nmf._init``), so that the error comparison is apples to apples.

    .venv/bin/python bench/bench_nmf.py [--quick] [--repeats N]

Timings are wall-clock, best (and median) of N interleaved repeats; the order of the methods
rotates between repeats so that background load hits all of them alike. The main table runs every
method on 1 thread (torch and the BLAS under numpy): like for like (scikit-learn's cd is single-threaded
Cython), and robust when other processes share the 2 cores (2-thread OpenMP code stalls at every
barrier whose other thread was descheduled). The summary adds ours HALS and scikit-learn cd at the
default thread count.
"""

from __future__ import annotations

import time
import warnings

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
import torch
from _common import load_features, machine_info, median, parser, table, timed
from sklearn.decomposition import NMF
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from protolib.backbones import load_backbone
from protolib.method import feature_matrix
from protolib.method.nmf import _init, batched_nmf

TOL, MAX_ITER, SEED = 1e-4, 200, 0


def relative_error(A: np.ndarray, W: np.ndarray, H: np.ndarray) -> float:
    A64 = A.astype(np.float64)
    return float(np.linalg.norm(A64 - W.astype(np.float64) @ H.astype(np.float64)) / np.linalg.norm(A64))


def run_ours(mats: list[torch.Tensor], k: int, solver: str):
    """-> [(E_c, P_c)], [iterations_c]"""
    result = batched_nmf(mats, k, max_iter=MAX_ITER, tol=TOL, random_state=SEED, solver=solver, return_coefficients=True)
    factors = [(E.numpy(), P.numpy()) for E, P in zip(result.coefficients, result.prototypes)]
    return factors, result.iterations.tolist()


def run_sklearn(arrays: list[np.ndarray], k: int, solver: str, inits=None):
    """A per-class loop, as DFF / CRAFT use scikit-learn; -> [(W_c, H_c)], [n_iter_c]"""
    factors, iters = [], []
    for c, A in enumerate(arrays):
        if inits is None:
            model = NMF(k, init="random", random_state=SEED, solver=solver, tol=TOL, max_iter=MAX_ITER)
            W = model.fit_transform(A)
        else:
            model = NMF(k, init="custom", random_state=SEED, solver=solver, tol=TOL, max_iter=MAX_ITER)
            W = model.fit_transform(A, W=inits[0][c].copy(), H=inits[1][c].copy())
        factors.append((W, model.components_))
        iters.append(model.n_iter_)
    return factors, iters


def summarise(arrays: list[np.ndarray], result) -> tuple[float, str]:
    """Mean relative error (float64, computed the same way for everyone), and the iterations: mean, max
    (a batch runs until its slowest class stops) and how many classes hit max_iter."""
    factors, iters = result
    error = float(np.mean([relative_error(A, W, H) for A, (W, H) in zip(arrays, factors)]))
    capped = sum(i >= MAX_ITER for i in iters)
    return error, f"{np.mean(iters):.1f} / {max(iters)}" + (f" ({capped} capped)" if capped else "")


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=None, help="timing repeats (default 2, quick 1)")
    args = p.parse_args()
    repeats = args.repeats or (1 if args.quick else 2)
    ks = (3,) if args.quick else (3, 5, 10)
    images_per_class = 60
    warnings.simplefilter("ignore", ConvergenceWarning)
    default_threads = torch.get_num_threads()

    print(f"machine: {machine_info()}")
    print(f"load average at start: {loadavg()}")
    backbone = load_backbone()
    features = load_features(backbone, args.data, "train", images_per_class, args.cache)  # cached before timing
    mats = [feature_matrix(f.feats).contiguous() for _, f in features]
    if args.quick:
        mats = mats[:3]
    arrays = [A.numpy() for A in mats]
    print(f"{len(mats)} classes, A_c {tuple(mats[0].shape)} float32 each; tol={TOL}, max_iter={MAX_ITER}; repeats={repeats}")

    inits = {}
    for k in ks:
        E, P = _init(mats, k, SEED, max(A.shape[0] for A in mats), torch.float32)
        inits[k] = ([E[c, : A.shape[0]].numpy() for c, A in enumerate(mats)], [P[c].numpy() for c in range(len(mats))])
    methods = {
        "ours HALS (batched torch)": lambda k: run_ours(mats, k, "hals"),
        "ours MU (batched torch)": lambda k: run_ours(mats, k, "mu"),
        "sklearn cd, init=random": lambda k: run_sklearn(arrays, k, "cd"),
        "sklearn mu, init=random": lambda k: run_sklearn(arrays, k, "mu"),
        "sklearn cd, init=ours": lambda k: run_sklearn(arrays, k, "cd", inits[k]),
        "sklearn mu, init=ours": lambda k: run_sklearn(arrays, k, "mu", inits[k]),
    }
    names = list(methods)
    ours_hals, ours_mu = names[0], names[1]
    # 1 thread everywhere (torch and the BLAS under numpy/scikit-learn): like for like, and robust on a
    # shared 2-core machine; then the default thread count for the two main contenders.
    configs = [(1, name) for name in names]
    if default_threads > 1 and not args.quick:
        configs += [(default_threads, ours_hals), (default_threads, "sklearn cd, init=ours")]

    times = {(t, k, m): [] for t, m in configs for k in ks}
    cpu = {(t, k, m): [] for t, m in configs for k in ks}
    outcome = {}
    with threadpool_limits(limits=1):
        torch.set_num_threads(1)
        run_ours(mats, ks[0], "hals")  # warm-up: first-call allocations
    for rep in range(repeats):
        for k in ks:
            shift = rep % len(configs)
            for threads, name in configs[shift:] + configs[:shift]:  # the order rotates between repeats
                torch.set_num_threads(threads)
                with threadpool_limits(limits=threads):
                    cpu_start = time.process_time()
                    seconds, result = timed(lambda name=name, k=k: methods[name](k))
                    cpu[(threads, k, name)].append(time.process_time() - cpu_start)
                times[(threads, k, name)].append(seconds)
                if (k, name) not in outcome:  # deterministic; the error is computed untimed
                    outcome[(k, name)] = summarise(arrays, result)
        print(f"repeat {rep + 1}/{repeats} done (load average {loadavg()})", flush=True)
    torch.set_num_threads(default_threads)

    def best(threads, k, name, source=times):
        return min(source[(threads, k, name)])

    rows = []
    for k in ks:
        ours_err = outcome[(k, ours_hals)][0]
        for name in names:
            err, iters_text = outcome[(k, name)]
            rows.append(
                [
                    k,
                    name,
                    f"{best(1, k, name):.2f}",
                    f"{median(times[(1, k, name)]):.2f}",
                    f"{best(1, k, name, cpu):.2f}",
                    iters_text,
                    f"{err:.5f}",
                    f"{err - ours_err:+.5f}",
                    f"{best(1, k, name) / best(1, k, ours_hals):.2f}x",
                ]
            )
    print("\n1 thread (torch and BLAS):")
    print(
        table(
            [
                "k",
                "method",
                "wall s (best)",
                "wall s (median)",
                "CPU s (best)",
                "iters mean / max",
                "mean rel. error",
                "error - ours HALS",
                "time / ours HALS",
            ],
            rows,
        )
    )

    summary = []
    for k in ks:
        sk = {n: best(1, k, n) for n in names[2:]}
        fastest = min(sk, key=sk.get)
        row = [
            k,
            f"{best(1, k, ours_hals):.2f}",
            f"{fastest} {sk[fastest]:.2f}",
            f"{sk[fastest] / best(1, k, ours_hals):.2f}x",
            f"{best(1, k, 'sklearn cd, init=ours') / best(1, k, ours_hals):.2f}x",
            f"{best(1, k, 'sklearn mu, init=ours') / best(1, k, ours_mu):.2f}x",
        ]
        if (default_threads, k, ours_hals) in times:
            ours_t, sk_t = best(default_threads, k, ours_hals), best(default_threads, k, "sklearn cd, init=ours")
            row += [f"{ours_t:.2f}", f"{sk_t:.2f}", f"{sk_t / ours_t:.2f}x"]
        summary.append(row)
    header = [
        "k",
        "ours HALS s",
        "fastest sklearn s",
        "speed-up vs fastest",
        "speed-up vs sklearn cd (same init)",
        "MU vs MU, same init (sklearn / ours)",
    ]
    if default_threads > 1 and not args.quick:
        header += [
            f"ours HALS s, {default_threads} threads",
            f"sklearn cd s, {default_threads} threads",
            f"speed-up, {default_threads} threads",
        ]
    print("\nsummary (speed-up = sklearn wall time / ours, best of the repeats):")
    print(table(header, summary))
    print(f"\nload average at end: {loadavg()}")


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


if __name__ == "__main__":
    main()
