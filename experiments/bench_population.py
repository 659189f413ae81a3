"""Population speed-up: K starting points in one vmapped program vs K separate runs (issue #13).

    python experiments/bench_population.py            # K = 1, 8, 64; 20 outer steps each
    python experiments/bench_population.py --quick    # K = 1, 8; 5 steps; one single run timed (CI)

Workload: ``experiment=logistic_breast_cancer`` as ``hyperopt-run`` builds it
(:func:`hyperopt.cli.build_bilevel`; float64, L-BFGS inner and outer), a fixed number of outer
steps (``stop=None``: every member does the same work), members spread over
``population_range=[0.01, 100]``, persistent compile cache off (every program compiled).

* ``population K``: one ``fit(..., population=K)``: wall time including its compilation, and
  its step loop alone.
* ``K separate runs``: K times the median wall time of ``--repeats`` single runs, each started
  at a different member's initialization (every separate run compiles its own program, as
  separate ``hyperopt-run`` processes do).

The speed-up is ``K separate / population K``, both measured in this process, side by side.
"""

from __future__ import annotations

import argparse
import sys

from _common import header, markdown_table, median, one_thread, timed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 1, 8, 5 steps, --repeats 1")
    parser.add_argument("--sizes", default=None, help="comma-separated K (default 1,8,64)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None,
                        help="single runs timed for the sequential estimate (default 3; quick 1)")
    args = parser.parse_args(argv)
    one_thread()
    import jax

    jax.config.update("jax_enable_x64", True)
    from hydra import compose, initialize_config_dir

    from hyperopt import cli, compile_cache
    from hyperopt.bilevel import fit, init_state, make_splits
    from hyperopt.data import load_dataset
    from hyperopt.population import member_inits

    print(header(sys.argv if argv is None else ["experiments/bench_population.py", *argv]))
    sizes = [int(k) for k in (args.sizes or ("1,8" if args.quick else "1,8,64")).split(",")]
    steps = args.steps or (5 if args.quick else 20)
    args.repeats = args.repeats or (1 if args.quick else 3)
    compile_cache.disable()
    with initialize_config_dir(config_dir=cli._config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=logistic_breast_cancer", "logger=none"])
    data = load_dataset("breast_cancer", seed=cfg.seed)
    bilevel = cli.build_bilevel(cfg)
    opts = {**cli.fit_options(cfg), "stop": None}
    opts.pop("population", None)
    population_range = opts.pop("population_range")

    def single(theta):  # a separate run started where that member starts
        splits = make_splits(bilevel.problem, data, bilevel.cv_folds, opts["seed"])
        return fit(bilevel, data, steps, state=init_state(bilevel, data, splits, theta), **opts)

    inits = member_inits(bilevel.problem, data, max(sizes), population_range)
    picked = inits[:: max(1, len(inits) // args.repeats)][:args.repeats]
    singles = [timed(lambda t=t: single(t)) for t in picked]
    single_s = median([s for s, _ in singles])
    single_loop = median([r.total_time - r.compile_time for _, r in singles])
    rows = []
    for k in sizes:
        seconds, result = timed(lambda k=k: fit(bilevel, data, steps, population=k,
                                                population_range=population_range, **opts))
        loop = result.total_time - result.compile_time
        rows.append({"K": k, "population s": seconds, "population compile s": result.compile_time,
                     "population loop s": loop, "K separate runs s": k * single_s,
                     "K separate loops s": k * single_loop,
                     "speed-up (wall)": k * single_s / seconds, "speed-up (loops)": k * single_loop / loop,
                     "best loss": min(m["best_loss"] for m in result.population) if result.population
                     else result.state.best_loss})
    print(f"\nlogistic_breast_cancer, {steps} outer steps per member (stop=None), compile cache off; "
          f"one separate run: {single_s:.2f} s wall, {single_loop:.2f} s of steps "
          f"(median of {len(singles)})\n")
    print(markdown_table(rows, list(rows[0]), {"K": "d"}))


if __name__ == "__main__":
    main()
