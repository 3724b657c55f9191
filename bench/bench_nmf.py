"""Batched NMF (protolib's torch HALS and MU) against scikit-learn's NMF in a per-class loop.

Same features for everyone: EfficientNet-Lite0 features of the first 60 train images of each of the
10 classes, A_c = features clamped at 0 reshaped to (60*7*7, 1280). Same k, tol=1e-4, max_iter=200.
scikit-learn runs twice: (a) its own random init (random_state=0) and (b) init="custom" with exactly
our initial E, P (``protolib.nmf._init``), so that the error comparison is apples to apples.

    .venv/bin/python bench/bench_nmf.py [--quick] [--repeats N]

Timings are wall-clock, best (and median) of N interleaved repeats; the order of the methods
rotates between repeats so that background load hits all of them alike.
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
from protolib.nmf import _init, batched_nmf
from protolib.pipeline import feature_matrix

TOL, MAX_ITER, SEED = 1e-4, 200, 0


def relative_error(A: np.ndarray, W: np.ndarray, H: np.ndarray) -> float:
    A64 = A.astype(np.float64)
    return float(np.linalg.norm(A64 - W.astype(np.float64) @ H.astype(np.float64)) / np.linalg.norm(A64))


def run_ours(mats: list[torch.Tensor], k: int, solver: str):
    """-> [(E_c, P_c)], [iterations_c]"""
    result = batched_nmf(mats, k, max_iter=MAX_ITER, tol=TOL, seed=SEED, solver=solver, return_coefficients=True)
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


def summarise(arrays: list[np.ndarray], result) -> tuple[float, float, int]:
    """Mean relative error (float64, computed the same way for everyone), mean iterations, capped count."""
    factors, iters = result
    error = float(np.mean([relative_error(A, W, H) for A, (W, H) in zip(arrays, factors)]))
    return error, float(np.mean(iters)), sum(i >= MAX_ITER for i in iters)


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=None, help="timing repeats (default 2, quick 1)")
    args = p.parse_args()
    repeats = args.repeats or (1 if args.quick else 2)
    ks = (3,) if args.quick else (3, 5, 10)
    images_per_class = 60
    warnings.simplefilter("ignore", ConvergenceWarning)

    print(f"machine: {machine_info()}")
    print(f"load average at start: {open('/proc/loadavg').read().split()[:3]}")
    backbone = load_backbone()
    features = load_features(backbone, args.data, "train", images_per_class, args.cache)  # cached before timing
    mats = [feature_matrix(f.feats).contiguous() for _, f in features]
    if args.quick:
        mats = mats[:3]
    arrays = [A.numpy() for A in mats]
    print(f"{len(mats)} classes, A_c {tuple(mats[0].shape)} float32 each; tol={TOL}, max_iter={MAX_ITER}; "
          f"repeats={repeats}")

    methods = {}  # name -> callable(k)
    inits = {}
    for k in ks:
        E, P = _init(mats, k, SEED, max(A.shape[0] for A in mats), torch.float32)
        inits[k] = ([E[c, : A.shape[0]].numpy() for c, A in enumerate(mats)], [P[c].numpy() for c in range(len(mats))])
    methods["ours HALS (batched torch)"] = lambda k: run_ours(mats, k, "hals")
    methods["ours MU (batched torch)"] = lambda k: run_ours(mats, k, "mu")
    methods["sklearn cd, init=random"] = lambda k: run_sklearn(arrays, k, "cd")
    methods["sklearn mu, init=random"] = lambda k: run_sklearn(arrays, k, "mu")
    methods["sklearn cd, init=ours"] = lambda k: run_sklearn(arrays, k, "cd", inits[k])
    methods["sklearn mu, init=ours"] = lambda k: run_sklearn(arrays, k, "mu", inits[k])
    names = list(methods)

    times = {(k, m): [] for k in ks for m in names}
    cpu = {(k, m): [] for k in ks for m in names}
    outcome = {}
    run_ours(mats, ks[0], "hals")  # warm-up: first-call allocations and thread pool start
    for rep in range(repeats):
        for k in ks:
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                cpu_start = time.process_time()
                seconds, result = timed(lambda name=name, k=k: methods[name](k))
                cpu[(k, name)].append(time.process_time() - cpu_start)
                times[(k, name)].append(seconds)
                if rep == 0:  # deterministic: identical in every repeat; the error is computed untimed
                    outcome[(k, name)] = summarise(arrays, result)
        print(f"repeat {rep + 1}/{repeats} done", flush=True)

    rows = []
    for k in ks:
        ours_t = min(times[(k, names[0])])
        ours_err = outcome[(k, names[0])][0]
        for name in names:
            err, iters, capped = outcome[(k, name)]
            best = min(times[(k, name)])
            iters_text = f"{iters:.1f}" + (f" ({capped} capped)" if capped else "")
            rows.append([
                k, name, f"{best:.2f}", f"{median(times[(k, name)]):.2f}", f"{min(cpu[(k, name)]):.2f}", iters_text,
                f"{err:.5f}", f"{err - ours_err:+.5f}", f"{best / ours_t:.2f}x",
            ])
    header = ["k", "method", "wall s (best)", "wall s (median)", "CPU s (best)", "mean iters", "mean rel. error",
              "error - ours HALS", "time / ours HALS"]
    print()
    print(table(header, rows))

    summary = []
    for k in ks:
        ours_t = min(times[(k, names[0])])
        sk = {n: min(times[(k, n)]) for n in names[2:]}
        fastest = min(sk, key=sk.get)
        summary.append([k, f"{ours_t:.2f}", fastest, f"{sk[fastest]:.2f}", f"{sk[fastest] / ours_t:.2f}x",
                        f"{min(times[(k, 'sklearn mu, init=ours')]) / min(times[(k, names[1])]):.2f}x"])
    print()
    print(table(["k", "ours HALS s", "fastest sklearn", "its s", "speed-up (sklearn / ours HALS)",
                 "MU vs MU, same init (sklearn / ours)"], summary))

    # threads: the same work with one thread on each side, and ours with the default count
    if not args.quick:
        k = 5
        default_threads = torch.get_num_threads()
        rows, t = [], {}
        for _rep in range(repeats):
            for threads in (default_threads, 1):
                torch.set_num_threads(threads)
                t.setdefault(("ours HALS", threads), []).append(timed(lambda: run_ours(mats, k, "hals"))[0])
                with threadpool_limits(limits=threads):
                    t.setdefault(("sklearn cd, init=ours", threads), []).append(
                        timed(lambda: run_sklearn(arrays, k, "cd", inits[k]))[0]
                    )
        torch.set_num_threads(default_threads)
        for (name, threads), values in t.items():
            rows.append([k, name, threads, f"{min(values):.2f}", f"{median(values):.2f}"])
        print()
        print(table(["k", "method", "threads (torch / BLAS)", "wall s (best)", "wall s (median)"], rows))
    print(f"\nload average at end: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
