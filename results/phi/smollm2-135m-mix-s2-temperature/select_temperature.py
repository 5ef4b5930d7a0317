"""Choose φ's weight temperature by the rule that chose φ's checkpoint (taalm.validation.selection_key: the worst
kind's accuracy gain over uniform weights, its NLL gain breaking ties), across `meta-train --revalidate` runs.

    python select_temperature.py RUN [RUN ...] --out selection.json

Each RUN is a revalidation's output directory; its config.yaml gives the temperature, its selection.json the
validation of the checkpoint it chose. Prints a markdown table of every kind's gains."""
import argparse
import json
from pathlib import Path

import yaml

from taalm.validation import selection_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        config = yaml.safe_load((run / "config.yaml").read_text())
        selection = json.loads((run / "selection.json").read_text())
        rows.append({"run": run.name, "weight_temperature": config["weight_temperature"],
                     "weight_floor": config["weight_floor"], "update": selection["update"],
                     "validation": selection["validation"]})
    rows.sort(key=lambda r: r["weight_temperature"])
    metric = "accuracy"
    chosen = max(rows, key=lambda r: selection_key(r["validation"], metric))
    kinds = sorted({k.split("/")[0] for r in rows for k in r["validation"] if "/" in k})
    print("| T | worst kind | " + " | ".join(kinds) + " | mean weight | effective fraction | top-3 share |")
    print("|---" * (len(kinds) + 5) + "|")
    for r in rows:
        v = r["validation"]
        cells = [f"{v[f'{k}/gain_accuracy']:+.3f} / {v[f'{k}/gain_nll']:+.3f} / {v[f'{k}/answer_auc']:.2f}"
                 for k in kinds]
        mark = "**" if r is chosen else ""
        print(f"| {mark}{r['weight_temperature']:g}{mark} | {v['worst_kind']} | " + " | ".join(cells)
              + f" | {v['val_w_mean']:.3f} | {v['val_w_effective_fraction']:.2f} | {v['val_w_top3_share']:.2f} |")
    args.out.write_text(json.dumps({"rule": "max over T of (worst kind's accuracy gain, its NLL gain)",
                                    "chosen_temperature": chosen["weight_temperature"], "candidates": rows},
                                   indent=2) + "\n")
    print(f"chosen: T = {chosen['weight_temperature']:g} -> {args.out}")


if __name__ == "__main__":
    main()
