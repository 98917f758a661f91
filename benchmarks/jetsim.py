"""The jet-simulation benchmark of ``make bench``: ``python -m benchmarks.jetsim [--jets N] [--seed S]``.

Jets per second per core that Pythia 8 and FastJet make of each class (one process: generation, clustering
and matching), and the time the 16 features then take per jet (FastJet's contrib on many jets at once), with
the features' share of the whole: the generator, not the features, should be what limits a data set's making.
"""

from __future__ import annotations

import argparse
import time

from fpgaflow_trainer.simulation.features import jet_features
from fpgaflow_trainer.simulation.pythia import PROCESSES, generate, pythia_version


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jetsim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jets", type=int, default=200, help="jets of each class (default 200)")
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()
    import fastjet

    print(f"jet simulation: Pythia {pythia_version()}, FastJet {fastjet.__version__}; {args.jets} jets of each class, one core")
    print(f"{'class':>5} {'jets/s':>8} {'features ms/jet':>16} {'features share':>15}")
    made = generating = featuring = 0.0
    for label in PROCESSES:
        started = time.perf_counter()
        jets = generate(label, args.jets, args.seed)
        generated = time.perf_counter() - started
        jet_features(jets)
        features = time.perf_counter() - started - generated
        made, generating, featuring = made + args.jets, generating + generated, featuring + features
        print(f"{label:>5} {args.jets / generated:8.1f} {1e3 * features / args.jets:16.2f} "
              f"{100 * features / (generated + features):14.1f}%")
    print(f"{'all':>5} {made / generating:8.1f} {1e3 * featuring / made:16.2f} {100 * featuring / (generating + featuring):14.1f}%")


if __name__ == "__main__":
    main()
