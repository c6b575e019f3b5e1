"""Generate the notebooks in this folder (run: ``python notebooks/_build.py``); commit them without outputs.

Every notebook runs on the micro toy world (cached under ``$UNPACT_CACHE``) in well under a few minutes.
``tests/test_notebooks.py`` executes them with nbclient.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """import os
from unpact.toyworld import build_toyworld
world = build_toyworld("micro", cache_dir=os.environ.get("UNPACT_CACHE"), progress=False)
base = world.load_base()
forget = world.forget[:4]
print(base, len(world.forget), "forget items,", len(world.retain), "retain items")"""

UNLEARN = """from unpact.unlearn import unlearn
unlearned = unlearn(base, world.forget, world.retain, method="npo_gd", progress=False)"""

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "01_quickstart.ipynb": [
        (
            "md",
            "# Quickstart: audit an unlearned model of the toy world\n\nBuild the micro toy world, unlearn its forget "
            "set with NPO+GD, audit the result against the base and the retain-only model, and write the HTML report.",
        ),
        ("code", SETUP),
        ("code", UNLEARN),
        (
            "code",
            """import tempfile
from unpact.audit import AuditConfig, Models, audit
out = tempfile.mkdtemp(prefix="unpact-audit-")
config = AuditConfig(out=out, attribution="loo", max_forget=16, max_retain=16, n_retain_attacked=8, progress=False)
summary = audit(config, Models(base, {"npo_gd": unlearned}, retain_only=world.load_retain_only()),
                world.forget, world.retain)
print(summary.table())""",
        ),
        (
            "code",
            """from viz.report import write_report
path = write_report(out)
print("report:", path)""",
        ),
    ],
    "02_attribution_heatmaps.ipynb": [
        ("md", "# Attribution heatmaps: which prompt words carry the answer, before and after unlearning"),
        ("code", SETUP),
        ("code", UNLEARN),
        (
            "code",
            """from unpact.attribution import integrated_gradients
before = integrated_gradients(base, forget)
after = integrated_gradients(unlearned, forget)
before[0].top_words(5)""",
        ),
        (
            "code",
            """from viz.attribution import token_heatmap, token_heatmap_plotly
fig = token_heatmap(before[0], after[0])   # matplotlib: base / unlearned / difference, key words framed
fig""",
        ),
        ("code", "token_heatmap_plotly(before[1], after[1], values='share')"),
    ],
    "03_keyword_emphasis.ipynb": [
        ("md", "# Keyword-emphasis recovery: does stressing the key words bring the forgotten answer back?"),
        ("code", SETUP),
        ("code", UNLEARN),
        (
            "code",
            """from unpact.attacks import apply_text_attack, list_attacks
from unpact.evaluate import generate
ex = forget[0]
for name in ["restate", "repeat", "quote", "front"]:
    if name in list_attacks():
        attacked = apply_text_attack(name, ex, list(ex.keywords))
        print(f"{name:8s} {attacked.prompt!r} -> {generate(unlearned, [attacked], max_new_tokens=8)[0][0]!r}")
print("gold:", ex.answer)""",
        ),
    ],
    "04_lens_and_circuits.ipynb": [
        ("md", "# Logit lens and circuits: where in depth does the answer disappear?"),
        ("code", SETUP),
        ("code", UNLEARN),
        (
            "code",
            """from unpact.lens import logit_lens
from viz.lens import lens_curves_plotly, lens_grid_plotly
tb, tu = logit_lens(base, forget[:1])[0], logit_lens(unlearned, forget[:1])[0]
lens_curves_plotly(tb, tu)""",
        ),
        ("code", "lens_grid_plotly(tu, value='rank')"),
        (
            "code",
            """from unpact.circuits import edge_attribution_patching
from viz.circuits import circuit_graph_plotly
eb = edge_attribution_patching(base, forget[0])
eu = edge_attribution_patching(unlearned, forget[0])
circuit_graph_plotly(eb, eu, k=20)""",
        ),
    ],
    "05_your_own_model.ipynb": [
        (
            "md",
            "# Your own model\n\nPoint `MODEL_DIR` at a Hugging Face model directory (safetensors + tokenizer). "
            "In CI it is the micro toy world's base model (`UNPACT_MODEL_DIR`).",
        ),
        (
            "code",
            """import os
from unpact import Example, load_model
MODEL_DIR = os.environ.get("UNPACT_MODEL_DIR")
if MODEL_DIR is None:  # default: the micro toy world's base model
    from unpact.toyworld import build_toyworld
    world = build_toyworld("micro", cache_dir=os.environ.get("UNPACT_CACHE"), progress=False)
    MODEL_DIR = str(world.base_path)
    ex = world.forget[0]
else:
    ex = Example("q1", "The capital of France is", "Paris", keywords=("France",))
subject = load_model(MODEL_DIR)
subject""",
        ),
        (
            "code",
            """from unpact.attribution import attribute
from viz.attribution import token_heatmap_plotly
a = attribute(subject, ex, method="loo")
token_heatmap_plotly(a)""",
        ),
    ],
    "06_representations.ipynb": [
        (
            "md",
            "# Is it still in the representations? Probes, the unlearning direction, soft prompts, diff attacks\n\n"
            "A probe fit on retain people reads the forget people's answers from each layer's residual stream; the "
            "retain-only model, which never saw them, is the floor. Then the mean activation change unlearning made "
            "on forget prompts is projected out with hooks, against the same done with a direction from retain "
            "prompts (docs/representations.md).",
        ),
        ("code", SETUP),
        ("code", UNLEARN),
        (
            "code",
            """from unpact.representations import fit_probes
retain_only = world.load_retain_only()
probes = {name: fit_probes(m, world.retain, world.forget)
          for name, m in [("base", base), ("npo_gd", unlearned), ("retain_only", retain_only)]}
for name, r in probes.items():
    print(f"{name:12s} layer {r.layer_names[r.layer]:>5s}  accuracy per layer {r.accuracy.round(2)}  "
          f"shuffled labels {r.shuffled_accuracy.round(2)}  chance {r.chance:.2f}")""",
        ),
        (
            "code",
            """from viz.representations import probe_layers_plotly
rows = {name: {"layers": r.layer_names, "accuracy": r.accuracy.tolist(), "shuffled": r.shuffled_accuracy.tolist(),
               "layer": r.layer} for name, r in probes.items()}
probe_layers_plotly(rows, chance=probes["base"].chance)""",
        ),
        (
            "code",
            """from unpact.representations import unlearning_direction
from unpact.weights import split_halves
half_a, half_b = split_halves(world.forget, seed=0)
d = unlearning_direction(base, unlearned, half_a, world.retain[:len(half_a)], half_b, max_new_tokens=8)
print("share of the activation change along the direction, per block:", d.share_explained.round(2))
for key in d.keys:
    print(f"{key:14s} half-B accuracy {d.accuracy(key):.0%}")""",
        ),
        (
            "md",
            "A soft prompt (a few input embeddings learned on half A, weights frozen) and the attacks chosen from "
            "the circuit and lens diffs, each scored on half B; the retain-only model, attacked the same way, is "
            "their control.",
        ),
        (
            "code",
            """from unpact.attacks.soft_prompt import soft_prompt_attack
from unpact.attacks.tracer_diffs import diff_attacks
for name, m in [("npo_gd", unlearned), ("retain_only", retain_only)]:
    sp = soft_prompt_attack(m, half_a, half_b, steps=30, max_new_tokens=8)
    da = diff_attacks(base, m, half_a, world.retain[:len(half_a)], half_b, max_new_tokens=8)
    print(f"{name:12s} soft prompt {sp.accuracy('none'):.0%} -> {sp.accuracy('soft'):.0%};  "
          + ",  ".join(f"{k} {da.accuracy(k):.0%}" for k in da.keys) + f"  (heads {da.heads}, lens row {da.layer})")""",
        ),
    ],
}


def build(folder: Path = HERE) -> list[Path]:
    """Write every notebook (no outputs) into ``folder``; return their paths."""
    paths = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = folder / name
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build():
        print(p)
