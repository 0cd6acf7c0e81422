"""Build a ~400-column descriptor pool from the melting-point table, deterministically, and write it as CSV.

Usage: python benchmarks/descriptor_pool.py [OUT.csv] [--data PATH]

The real table (Seko et al. 2014 melting temperatures with elemental descriptors, 248 compounds, see
/work/shared/data/seko2014_melting_temps/PROVENANCE.md) has ~35 numeric descriptors. A descriptor
pool as featurizers produce it has hundreds: this script adds what they add, so the planner's handling
of wide tables (`closedloop bench` without --inputs, `planners.columns`, the forest surrogate) can be
measured on real objective values:

- pairwise products of 12 base descriptors and ratios of 12 pairs (a / (|b| + 1));
- squares, square roots and log1p of every base descriptor's magnitude;
- 60 random linear combinations of 5 base descriptors each (collinear with them);
- 20 scaled copies of base descriptors (duplicates up to scale: a GP would give each a lengthscale);
- 40 constant columns (an element no compound contains, an unused flag);
- 60 pure noise columns (seeded normal draws: nothing to learn from them);
- the compound's formula (text, unique per row: an ID the bench leaves out).

The objective Tm_K is the measured melting temperature, unchanged. Same output for the same input.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path("/work/shared/data/seko2014_melting_temps/seko_melting_with_elemental_descriptors.csv")
FALLBACK = Path(__file__).resolve().parents[1] / "protocols" / "data" / "melting_points.csv"
OBJECTIVE = "Tm_K"
SEED = 20261207


def build(table: pd.DataFrame) -> pd.DataFrame:
    """The wide pool: formula, ~400 numeric columns, the objective last."""
    rng = np.random.default_rng(SEED)
    base = table.drop(columns=[OBJECTIVE]).select_dtypes("number").astype(float)
    names = list(base.columns)
    columns: dict[str, np.ndarray] = {c: base[c].to_numpy() for c in names}
    picked = [names[i] for i in sorted(rng.choice(len(names), 12, replace=False))]
    for a, b in itertools.combinations(picked, 2):
        columns[f"{a}*{b}"] = base[a].to_numpy() * base[b].to_numpy()
    for a, b in list(itertools.permutations(picked, 2))[::11][:12]:
        columns[f"{a}/(|{b}|+1)"] = base[a].to_numpy() / (np.abs(base[b].to_numpy()) + 1.0)
    for c in names:
        magnitude = np.abs(base[c].to_numpy())
        columns[f"{c}^2"] = base[c].to_numpy() ** 2
        columns[f"sqrt|{c}|"] = np.sqrt(magnitude)
        columns[f"log1p|{c}|"] = np.log1p(magnitude)
    standardized = ((base - base.mean()) / base.std(ddof=0).replace(0.0, 1.0)).to_numpy()
    for k in range(60):
        terms = rng.choice(len(names), 5, replace=False)
        columns[f"mix{k}"] = standardized[:, terms] @ rng.normal(size=5)
    for k in range(20):
        c = names[k % len(names)]
        columns[f"{c}_scaled{k}"] = 3.7 * base[c].to_numpy() - 12.5 * k
    for k in range(40):
        columns[f"const{k}"] = np.full(len(table), float(k % 4))
    for k in range(60):
        columns[f"noise{k}"] = rng.normal(size=len(table))
    wide = pd.DataFrame({name: np.round(values, 8) for name, values in columns.items()})
    wide.insert(0, "formula", table.iloc[:, 0].astype(str).to_numpy())
    wide[OBJECTIVE] = table[OBJECTIVE].to_numpy()
    return wide


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("/tmp/descriptor_pool_melting.csv"))
    parser.add_argument("--data", type=Path, default=DATA if DATA.is_file() else FALLBACK)
    args = parser.parse_args(argv)
    wide = build(pd.read_csv(args.data))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    wide.to_csv(args.out, index=False)
    numeric = wide.shape[1] - 2
    print(f"{args.out}: {len(wide)} rows, {numeric} numeric columns + formula + {OBJECTIVE} (from {args.data})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
