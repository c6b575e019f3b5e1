"""Generate the tutorial notebooks in this folder (run: ``python notebooks/_build.py``); commit them without outputs.

Five tutorials, each runnable on the micro toy world (cached under ``$UNPACT_CACHE``) in about a minute on 2 CPU
cores. The docs build executes them (nbclient, inline matplotlib) and renders them with their figures;
``tests/test_notebooks.py`` checks they are in sync with this file and executes them.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# The micro toy world and its cached unlearned models (made on first use, seconds each).
SETUP = """%matplotlib inline
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notice in a notebook without widgets
import torch
from transformers.utils import logging as hf_logging

from unpact import load_model
from unpact.toyworld import build_toyworld
from unpact.toyworld.unlearned import unlearned_models

torch.set_num_threads(1)  # the micro models are tiny: one thread is fastest; drop this line for a real model
hf_logging.disable_progress_bar()
world = build_toyworld("micro", cache_dir=os.environ.get("UNPACT_CACHE"), progress=False)
base, retain_only = world.load_base(), world.load_retain_only()
print(base)
print(len(world.forget), "forget items,", len(world.retain), "retain items; e.g.", world.forget[0].prompt,
      "->", world.forget[0].answer)"""


def load_unlearned(*methods: str) -> str:
    """Code that loads the world's base model unlearned with ``methods`` (cached next to the world)."""
    names = ", ".join(repr(m) for m in methods)
    return f"""paths = unlearned_models(world, [{names}], progress=False)
unlearned = {{m: load_model(str(p), name=m) for m, p in paths.items()}}
for m, p in paths.items():
    print(m, "->", p)"""


# Items the base model answers right and the unlearned model wrong: the forgotten items.
FORGOTTEN = """from unpact.attacks import generate_answers
from unpact.metrics import lenient_match


def correct(model, items, attack="plain", keywords=None):
    outs = generate_answers(model, items, attack, keywords, max_new_tokens=16)
    return [lenient_match(o.samples[0], o.example.answer) for o in outs]


known = [ex for ex, ok in zip(world.forget, correct(base, world.forget)) if ok]
forgotten = [ex for ex, ok in zip(known, correct(MODEL, known)) if not ok]
print(f"the base model knows {len(known)} of {len(world.forget)} forget items; {NAME} answers "
      f"{len(forgotten)} of them wrong")
ex = forgotten[0]
print("example:", ex.prompt, "->", ex.answer)"""

# A forest plot of an audited model's paired tests (matplotlib, no pyplot state).
EVIDENCE_PLOT = """import numpy as np
from matplotlib.figure import Figure

LEVEL_COLOURS = {"black_box": "tab:blue", "white_box": "tab:orange", "weights": "tab:green"}


def evidence_plot(name, m, margin):
    \"\"\"Every paired test of one model: excess recovery over the control with its 95% clustered interval.\"\"\"
    tests = [e for e in m.evidence if e.n and np.isfinite(e.excess.value)]
    tests.sort(key=lambda e: (list(LEVEL_COLOURS).index(e.level) if e.level in LEVEL_COLOURS else 9, not e.primary))
    fig = Figure(figsize=(8, 0.34 * len(tests) + 1.4), layout="constrained")
    ax = fig.subplots()
    for y, e in enumerate(tests):
        x = e.excess
        lo, hi = np.nan_to_num(x.lo, nan=x.value), np.nan_to_num(x.hi, nan=x.value)
        ax.errorbar(x.value, y, xerr=[[x.value - lo], [hi - x.value]], fmt="D" if e.primary else "o",
                    ms=7 if e.primary else 5, color=LEVEL_COLOURS.get(e.level, "grey"), capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.axvline(margin, color="grey", ls="--", lw=0.8, label=f"margin {margin:+.2f}")
    ax.set_yticks(range(len(tests)), [f"{e.level}: {e.name}" + ("  [primary]" if e.primary else "") for e in tests],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("excess recovery = model - control on the same items (95% clustered CI)")
    ax.set_title(f"{name}: the evidence, by threat level (diamonds: primary tests)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return fig"""

NB1: list[tuple[str, str]] = [
    (
        "md",
        """# Is it gone or hidden? A whole audit of the toy world

This tutorial runs unpact's whole audit on the **micro toy world** and reads it figure by figure: how much each
unlearned model still answers, whether attacks bring the forgotten answers back (against a control that never knew
them), the evidence per threat level behind each verdict, and the HTML report. It runs in about a minute on 2 CPU
cores.

The question an audit answers: after unlearning, a model no longer gives the forgotten answer on the plain prompt.
Is the knowledge **gone** (removal), only **hidden** (suppression: some attack recovers it), or did the model lose
much else with it (destruction)?""",
    ),
    (
        "md",
        """## The toy world: a known ground truth

The toy world is a synthetic knowledge base of fictitious people (birth city, birth year, mother, profession, book).
Two small models are trained on it: the **base** model on every person, and the **retain-only** model on everyone
except the forget people. The retain-only model is exact unlearning: whatever it "knows" about the forget people is
chance. It is the **control** of every test below: an attack that makes the retain-only model produce the answer
tells us nothing, because that model never learnt it.

The micro world is built once and cached (`UNPACT_CACHE`); its models have 2 layers and 64 dimensions.""",
    ),
    ("code", SETUP),
    (
        "md",
        """## The unlearned models

Two built-in unlearning methods at their default strength, applied to the base model with the forget set (the
results are cached next to the world):

* **IdK** fine-tunes the model to answer "I don't know" on the forget questions while keeping the retain answers;
* **RMU** pushes the forget prompts' activations at one layer towards a random direction.""",
    ),
    ("code", load_unlearned("idk", "rmu")),
    (
        "md",
        """## Run the audit

`audit(config, models, forget, retain)` asks every model every forget question, plainly and under each attack,
attributes the base model's answers to choose the key words the attacks emphasise, and scores each model against
the control. `AuditConfig` holds every setting; this one is kept small for a quick run (leave-one-out attribution,
a few attacks, 32 retain items, and only the prompt and hook attacks: the weight-level and representation
evidence are switched off here and shown in tutorial 4). Re-running into the same directory resumes.""",
    ),
    (
        "code",
        """import tempfile

from unpact.audit import AuditConfig, Models, audit

out = tempfile.mkdtemp(prefix="unpact-audit-")
config = AuditConfig(
    out=out,
    attacks=("restate", "repeat", "quote", "front", "sample", "embed_scale", "attn_bias"),
    attribution="loo",
    max_retain=32,
    n_retain_attacked=16,
    circuits=1,
    relearn=False,
    quantize=False,
    probes=False,
    directions=False,
    soft_prompt=False,
    diff_attacks=False,
    standard_metrics=False,
    progress=False,
)
summary = audit(config, Models(base, unlearned, retain_only=retain_only), world.forget, world.retain)
print(summary.table())""",
    ),
    (
        "md",
        """The table has one line per model: `forget` and `retain` are the shares of forget and retain items answered
right on the plain prompt (lenient match: the gold answer appears as a whole-word prefix or span of the
generation), `forgot` the share of the base-known forget items the model now gets wrong, then the best single
attack's recovery next to its control (`ctrl`), recovery by any attack, the destructive rate on retain prompts and
the verdict.

## Figure 1: what the models still answer

Forget accuracy against retain accuracy, one point per model, with 95% Wilson intervals. The base model sits at the
top right (knows both); the retain-only model, the target of exact unlearning, at the bottom right. A method that
moves towards the bottom left forgot the forget set and much of the retain set with it.""",
    ),
    (
        "code",
        """from viz.recovery import dilemma_plot

rows = []
for name, m in summary.models.items():
    s = m.scores
    rows.append({"method": name,
                 "retain_accuracy": s.retain_acc.rate, "retain_accuracy_ci": (s.retain_acc.lo, s.retain_acc.hi),
                 "forget_accuracy": s.forget_acc.rate, "forget_accuracy_ci": (s.forget_acc.lo, s.forget_acc.hi)})
dilemma_plot(rows, title="Forget vs retain accuracy (plain prompt, 95% CI)")""",
    ),
    (
        "md",
        """## Figure 2: recovery under attacks, next to the control

A plain-prompt failure is not yet forgetting. For every attack, the **recovery rate** is the share of the forgotten
items (base model right, this model wrong on the plain prompt) that the model answers right under the attack:

$$\\text{recovery}(a) = \\frac{\\#\\{i \\in \\text{forgotten} : \\text{model answers } i \\text{ right under } a\\}}
{\\#\\,\\text{forgotten}}$$

The grey bar is the **control**: the retain-only model under the same attack on the same items. Prompt attacks
(`restate`, `repeat`, `quote`, `front`) rewrite the question around its key words; `sample` draws several answers
instead of the greedy one; `embed_scale` and `attn_bias` are white-box hooks that amplify the key tokens'
embeddings or the attention paid to them. The intervals are 95% intervals **clustered by fact** (the phrasings of
one fact are not independent evidence), so they are wider than a naive binomial interval.

What to look for: an attack whose bar and interval lie clearly above the control's. Bars level with the control say
the attack finds nothing the retain-only model could not guess.""",
    ),
    (
        "code",
        """from IPython.display import display

from viz.recovery import recovery_chart

for name, m in summary.models.items():
    if m.role != "unlearned":
        continue
    entries = {**m.scores.recovery, "any attack": m.scores.recovery_any}
    shown = {a: {"rate": e.rate.to_dict(), "control": e.control.to_dict()} for a, e in entries.items() if e.rate.n}
    print(f"{name}: {m.scores.recovery_any.rate.n} forgotten items attacked")
    display(recovery_chart(shown, title=f"Recovery per attack: {name} (control: retain-only)"))""",
    ),
    (
        "md",
        """## Figure 3: the evidence behind the verdict

The verdict does not read the bars one by one (with many attacks, one would clear its control by luck). Each
**threat level** has one pre-declared *primary* test, and the primary tests are corrected together (Holm):

* `black_box`: any prompt attack recovers the item (what a user with the chat box can do);
* `white_box`: any hook or representation evidence (what someone with the weights running can read);
* `weights`: relearning or quantization (what someone who can change the weights can do); off in this run.

Every test is **paired**: the model and the control on the same items. The excess is their difference with a
clustered 95% interval; a level is *recoverable* when its corrected p-value is below `alpha` and the interval's lower
end clears the margin (`rule.min_excess`, dashed line), *residue* when significant but below the margin,
*not recoverable* when the interval excludes the margin from above, and *inconclusive* when it reaches it.""",
    ),
    ("code", EVIDENCE_PLOT),
    (
        "code",
        """margin = config.rule.min_excess
for name, m in summary.models.items():
    if m.role == "unlearned":
        display(evidence_plot(name, m, margin))""",
    ),
    (
        "md",
        """## The verdict

Applied in order (docs/audit.md): `not_unlearned` if fewer than half of the base-known forget items are forgotten;
`suppression` if any level is recoverable; `destruction` if not, but retain accuracy fell by more than
`rule.max_retain_drop`; `removal_with_residue` if a level shows a small significant excess; `removal` if every level
tested is not recoverable; otherwise `inconclusive` (the micro world has few items, so wide intervals are common:
more items, or the default world, narrow them). The reason carries the deciding numbers.""",
    ),
    (
        "code",
        """for name, m in summary.models.items():
    if m.verdict is None:
        continue
    print(f"{name}: {m.verdict.label}  (destructive: {m.verdict.destructive})")
    print("   ", m.verdict.reason)
    for level, o in m.levels.items():
        print(f"    {level:10s} {o.outcome:16s} {o.reason}")""",
    ),
    (
        "md",
        """## The HTML report

`viz.report.write_report(audit_dir)` (or `unpact report AUDIT_DIR`) writes one self-contained HTML page: the
verdicts, the summary table, the recovery and dilemma charts, attribution heatmaps, logit-lens curves, circuit
graphs, the per-item records and the configuration. Its plotly figures are embedded with plotly.js, so the page
works offline.""",
    ),
    (
        "code",
        """from viz.report import write_report

path = write_report(out)
print("report:", path, f"({path.stat().st_size / 1e6:.1f} MB)")
print("audit directory:", sorted(p.name for p in path.parent.iterdir()))""",
    ),
    (
        "md",
        """## What to try next

* Audit other methods: `unlearned_models(world, ["npo_gd", "unierase", "ga_gd"])` (see docs/unlearning.md), or
  all of them at a matched utility with `unpact.audit.audit_toyworld(AuditConfig(preset="micro"))`.
* Turn the other levels on (`relearn`, `quantize`, `probes`, `directions`, `soft_prompt`, `diff_attacks`): tutorial
  4 reads each of them.
* Use the default toy world (`build_toyworld("default")`): more people, narrower intervals, clearer verdicts.
* Change the rule (`AuditConfig(rule=VerdictRule(min_excess=0.1))`) and see which verdicts move.
* Audit your own models from the command line: `unpact audit --base DIR --unlearned name=DIR --retain-only DIR
  --forget F --retain R --out OUT` (tutorial 5 shows the Python side).""",
    ),
]

NB2: list[tuple[str, str]] = [
    (
        "md",
        """# Attribution and key words: where the model looks, before and after unlearning

This tutorial attributes a forgotten answer to the prompt's words on the base and the unlearned model, with
integrated gradients and with leave-one-out, shows how unpact picks the **key words** from those attributions (the
unPact rule and the stop list), and uses them in **keyword-emphasis attacks** that try to bring the answer back. It
runs in under a minute on 2 CPU cores (micro toy world, the IdK-unlearned model).""",
    ),
    ("code", SETUP),
    ("code", load_unlearned("idk")),
    (
        "md",
        """## A forgotten item

The items worth explaining are the **forgotten** ones: the base model answers them right (greedy decoding, lenient
match), the unlearned model wrong.""",
    ),
    ("code", 'MODEL, NAME = unlearned["idk"], "idk"\n' + FORGOTTEN),
    (
        "md",
        """## Figure 1: integrated gradients, base vs unlearned

Both methods explain the same number, the teacher-forced mean log-probability of the gold answer
$F(x) = \\frac{1}{T}\\sum_k \\log p(y_k \\mid x, y_{<k})$. **Integrated gradients** moves the prompt's token
embeddings $x$ along a straight line from a baseline $x'$ (the pad token's embedding) and integrates the gradient:

$$\\mathrm{IG}_i = (x_i - x'_i) \\cdot \\int_0^1 \\frac{\\partial F}{\\partial x_i}\\big(x' + \\alpha (x - x')\\big)\\,
d\\alpha,\\qquad \\sum_i \\mathrm{IG}_i \\approx F(x) - F(x')$$

(the sum rule, *completeness*, is checked: its error is printed). Token scores are summed into words. The heatmap
has three rows: the base model, the unlearned model, and their difference; red raises the answer's
log-probability, blue lowers it. What to look for: words that carried the answer
on the base model and carry much less (or push against it) after unlearning.""",
    ),
    (
        "code",
        """from unpact.attribution import integrated_gradients, leave_one_out
from viz.attribution import token_heatmap

ig_base = integrated_gradients(base, [ex], n_steps=32)[0]
ig_unl = integrated_gradients(MODEL, [ex], n_steps=32)[0]
for label, a in (("base", ig_base), (NAME, ig_unl)):
    print(f"{label:6s} F(x) = {a.value:.3f}, relative completeness error {a.relative_completeness_error:.1e}")
token_heatmap(ig_base, ig_unl, labels=("base", NAME), title=f"Integrated gradients: {ex.prompt} -> {ex.answer}")""",
    ),
    (
        "md",
        """## Figure 2: leave-one-out on the same item

**Leave-one-out** deletes one prompt token at a time and measures the drop,
$C(x_i) = F(x) - F(x \\setminus x_i)$. It needs no gradients and no baseline, only one forward per token, and is
not additive (no completeness). The shares view divides each model's positive scores by their sum, so the two
models compare even when unlearning changed the scale of $F$.""",
    ),
    (
        "code",
        """loo_base = leave_one_out(base, [ex])[0]
loo_unl = leave_one_out(MODEL, [ex])[0]
token_heatmap(loo_base, loo_unl, labels=("base", NAME), values="share",
              title="Leave-one-out, shares of the positive contribution")""",
    ),
    (
        "code",
        """d = ig_base.diff(ig_unl)
print("words whose share fell most (IG):", [(w.strip(), round(c, 3)) for w, c in d.largest_drops(3)])
d = loo_base.diff(loo_unl)
print("words whose share fell most (LOO):", [(w.strip(), round(c, 3)) for w, c in d.largest_drops(3)])""",
    ),
    (
        "md",
        """## How the key words are chosen

The attacks need to know which words to emphasise. unpact uses the unPact paper's rule on the **base** model's
attribution: normalise the positive word contributions to shares,

$$\\text{share}_i = \\frac{\\max(s_i, 0)}{\\sum_j \\max(s_j, 0)}$$

over the *candidate* words; if fewer than $\\beta$ (3) words are positive, all of them are key words, else those with
a share above $\\alpha$ (0.1). A word is never a candidate if it is punctuation, a special token, equal to the gold
answer or sharing a content word with it (an attack must never leak the answer), or on the **stop list** (by default
English function words: emphasising "the" or "was" is no attack; `AuditConfig(stop_words=...)` takes `"none"` or a
file). The *drop* rule instead takes the words whose share fell most from base to unlearned.""",
    ),
    (
        "code",
        """import pandas as pd

from unpact.keytokens import is_candidate, key_words, positive_shares, stop_list

stop = stop_list("en")
words = [w.strip() for w in loo_base.words]
cand = [is_candidate(w, ex.answer) and w.lower() not in stop for w in words]
table = pd.DataFrame({
    "word": words,
    "LOO score (base)": loo_base.word_scores.round(3),
    "on the stop list": [w.lower() in stop for w in words],
    "candidate": cand,
    "share": positive_shares(loo_base.word_scores, cand).round(3),
})
print("unPact rule:              ", key_words(loo_base))
print("unPact rule, no stop list:", key_words(loo_base, stop_words="none"))
print("drop rule (base -> idk):  ", key_words(loo_base, loo_unl, rule="drop"))
print("the item's own keywords:  ", list(ex.keywords))
table""",
    ),
    (
        "md",
        """## Figure 3: does unlearning take the focus off the key words?

The unPact paper's first finding: after unlearning, the key words carry a smaller share of the answer's attribution.
Below, for up to 32 forgotten items, the key words' share on the base model (x) against their share on the unlearned
model (y), with leave-one-out; retain items, which unlearning should leave alone, are the comparison. Points below
the diagonal lost focus.""",
    ),
    (
        "code",
        """import numpy as np
from matplotlib.figure import Figure

items = forgotten[:32]
retain_items = world.retain[:32]


def key_share(before, after):
    keys = set(key_words(before))
    mask = np.array([w.strip() in keys for w in before.words])
    return before.word_shares()[mask].sum(), after.word_shares()[mask].sum()


fig = Figure(figsize=(5, 5), layout="constrained")
ax = fig.subplots()
for label, its, colour in (("forgotten forget items", items, "tab:red"), ("retain items", retain_items, "tab:blue")):
    pairs = np.array([key_share(b, a) for b, a in zip(leave_one_out(base, its), leave_one_out(MODEL, its))])
    ax.scatter(pairs[:, 0], pairs[:, 1], s=18, alpha=0.7, color=colour, label=f"{label} (n={len(its)})")
    print(f"{label:22s} mean key-word share: base {pairs[:, 0].mean():.2f} -> {NAME} {pairs[:, 1].mean():.2f}")
ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="key words' share, base model", ylabel=f"key words' share, {NAME}",
       title="Key-word focus before and after unlearning (LOO)")
ax.legend(fontsize=8)
fig""",
    ),
    (
        "md",
        """## Keyword-emphasis attacks

If unlearning only took the model's attention off the key words, stressing them might bring the answer back. The
text attacks rewrite the question around its key words (`restate`: "Focus on: X. ...", `repeat`: "X X",
`quote`, `capitalise`, `front`, and the combination `restate+repeat`); the white-box attacks change no text but scale
the key tokens' embeddings (`embed_scale`) or add a bias to the attention paid to them (`attn_bias`). Here is what
each does to one prompt, and the unlearned model's answer:""",
    ),
    (
        "code",
        """keys = key_words(loo_base)
attacks = ["plain", "restate", "repeat", "quote", "capitalise", "front", "restate+repeat", "embed_scale", "attn_bias"]
print("key words:", keys, "  gold:", ex.answer)
for attack in attacks:
    (o,) = generate_answers(MODEL, [ex], attack, [keys], max_new_tokens=16)
    print(f"{attack:15s} {o.example.prompt!r:60s} -> {o.samples[0]!r}")""",
    ),
    (
        "md",
        """## Figure 4: recovery by keyword emphasis, against the control

On every forgotten item (up to 32 here), with key words chosen by the unPact rule on the base model's leave-one-out
attribution: the share the unlearned model answers right under each attack, next to the retain-only model under the
same attack on the same items (the control: it never knew these facts, so whatever it gets right is guessing or
leakage through the prompt). The intervals here are plain Wilson intervals over items; the audit's are clustered by
fact (tutorial 1).""",
    ),
    (
        "code",
        """from unpact.metrics import wilson_interval
from viz.recovery import recovery_chart

keywords = [key_words(a) for a in leave_one_out(base, items)]
rows = []
for attack in attacks[1:]:
    k_m = sum(correct(MODEL, items, attack, keywords))
    k_c = sum(correct(retain_only, items, attack, keywords))
    rows.append({"attack": attack, "rate": k_m / len(items), "ci": wilson_interval(k_m, len(items)), "n": len(items),
                 "control": k_c / len(items), "control_ci": wilson_interval(k_c, len(items))})
    print(f"{attack:15s} {NAME} {k_m:2d}/{len(items)}   retain-only {k_c:2d}/{len(items)}")
recovery_chart(rows, title=f"Keyword emphasis on {len(items)} forgotten items: {NAME} vs retain-only")""",
    ),
    (
        "md",
        """## What to try next

* Compare the other unlearning methods: `load_unlearned`-style `unlearned_models(world, ["npo_gd", "rmu"])`.
* Choose key words with the *drop* or *union* rule (`key_words(base_attr, unlearned_attr, rule="union")`), or with
  integrated gradients instead of leave-one-out, and see whether the recovery changes.
* Try `stop_words="none"` and watch function words become key words (and the attacks get weaker).
* Attribute each answer token separately (`integrated_gradients(..., per_answer_token=True)`) and draw it with
  `viz.attribution.attribution_matrix`.
* The audit does all of this on every item and clusters the intervals by fact: `AuditConfig(keywords="attribution")`
  (the default) in tutorial 1.""",
    ),
]

NB3: list[tuple[str, str]] = [
    (
        "md",
        """# Logit lens and circuits: where inside the model does the answer go?

This tutorial looks inside the model on a forgotten item. The **logit lens** decodes every layer's residual stream
into a next-token distribution and shows at which depth the gold answer appears, on the base model and after
unlearning; a **tuned lens** does the same through a small affine map learned per layer. **Edge attribution
patching** (EAP) scores every edge of the model's computational graph, and the circuit graph shows which edges
unlearning cut or added. It runs in under a minute on 2 CPU cores (micro toy world, the RMU-unlearned model).""",
    ),
    ("code", SETUP),
    ("code", load_unlearned("rmu")),
    ("code", 'MODEL, NAME = unlearned["rmu"], "rmu"\n' + FORGOTTEN),
    (
        "md",
        """## Figure 1: the logit lens grid, base vs unlearned

For each layer $l$ (after the embedding and after each block) and each position $p$, the residual stream $h_{l,p}$
is decoded as if it were the last layer:

$$p_l(\\cdot \\mid x_{\\le p}) = \\mathrm{softmax}\\big(W_U \\, \\mathrm{norm}(h_{l,p})\\big)$$

The grid shows the **rank** of the correct next token (0 = the model's top guess) on a log colour scale, for the
prompt and the teacher-forced answer; the row labelled with the last block is the model's own output. What to look
for: the cell that predicts the first answer token (the last prompt position). On the base model the gold token's
rank falls to 0 somewhere in depth; after unlearning, see whether it still falls at an intermediate layer and is
lost only at the end (the answer computed, then suppressed), or never appears.""",
    ),
    (
        "code",
        """from IPython.display import display

from unpact.lens import logit_lens
from viz.lens import lens_curves, lens_grid

t_base, t_unl = logit_lens(base, [ex])[0], logit_lens(MODEL, [ex])[0]
display(lens_grid(t_base, value="rank", title="Logit lens, base model: rank of the correct next token"))
display(lens_grid(t_unl, value="rank", title=f"Logit lens, {NAME}: rank of the correct next token"))""",
    ),
    (
        "md",
        """## Figure 2: the first answer token through depth

The same two trajectories at one position (the one that predicts the first answer token): the gold token's
probability per layer, base vs unlearned.""",
    ),
    ("code", 'lens_curves(t_base, t_unl, value="prob", labels=("base", NAME))'),
    (
        "md",
        """## Figure 3: over all forgotten items

One item can mislead. The median rank of the first answer token per layer over up to 32 forgotten items, with the
retain-only model (which never learnt them) as the floor. A curve of the unlearned model that dips towards the base
model's at some layer, below the retain-only model's, points at an answer still computed inside; the audit turns
this into the `lens recovery` test (white-box level).""",
    ),
    (
        "code",
        """import numpy as np
from matplotlib.figure import Figure

items = forgotten[:32]
fig = Figure(figsize=(6, 3.8), layout="constrained")
ax = fig.subplots()
for label, model, style in (("base", base, "-o"), (NAME, MODEL, "-s"), ("retain-only", retain_only, "--^")):
    ranks = np.stack([t.first_token_rank() for t in logit_lens(model, items)])
    med = np.median(ranks, axis=0)
    ax.plot(t_base.layer_names, med + 1, style, label=label)
    print(f"{label:12s} median rank + 1 per layer: {(med + 1).tolist()}")
ax.set_yscale("log")
ax.set(xlabel="layer (residual stream after it)", ylabel="median rank of the first answer token + 1",
       title=f"Logit lens over {len(items)} forgotten items")
ax.legend()
fig""",
    ),
    (
        "md",
        """## Figure 4: the tuned lens

The logit lens assumes every layer speaks the last layer's language; early layers often do not. A **tuned lens**
learns, per layer, an affine map $T_l(h) = A_l h + b_l$ minimising $\\mathrm{KL}(p_L \\,\\|\\, p_l)$ between the
model's final distribution and the decoded one, on text that excludes the forget items (here 256 retain items, a
few seconds on the micro model). Then $p_l = \\mathrm{softmax}(W_U\\,\\mathrm{norm}(T_l(h_l)))$. Each model gets its
own lens, so the unlearned model is read in its own terms.""",
    ),
    (
        "code",
        """from unpact.representations import fit_tuned_lens

corpus = world.retain[:256]
tuned = {name: fit_tuned_lens(m, corpus, steps=100) for name, m in (("base", base), (NAME, MODEL))}
tt_base = logit_lens(base, [ex], method="tuned", tuned=tuned["base"])[0]
tt_unl = logit_lens(MODEL, [ex], method="tuned", tuned=tuned[NAME])[0]
display(lens_curves(tt_base, tt_unl, value="prob", labels=("base", NAME),
                    title="Tuned lens: probability of the first answer token per layer"))
display(lens_grid(tt_unl, value="rank", title=f"Tuned lens, {NAME}: rank of the correct next token"))""",
    ),
    (
        "md",
        """## Figure 5: circuits before and after (edge attribution patching)

The model's graph has nodes for the input embedding, each attention head, each MLP and the logits; an edge
$u \\to v$ carries $u$'s output into $v$'s input. EAP scores every edge with a first-order estimate of what
replacing $u$'s output by a corrupted one would do to the metric $M$ (the answer's mean log-probability):

$$\\text{score}(u \\to v) = \\sum_{p} \\big(a_u(\\text{corrupt}) - a_u(\\text{clean})\\big)_p \\cdot
\\frac{\\partial M}{\\partial\\, \\text{input}_v}\\Big|_{\\text{clean}, p}$$

with mean ablation as the corruption here. The graph draws the top-$k$ edges by $|\\text{score}|$ of both models:
grey edges are kept, red dashed edges are in the base model's top-$k$ only (lost), green ones in the unlearned
model's only (gained); width follows $|\\text{score}|$.""",
    ),
    (
        "code",
        """from unpact.circuits import circuit_diff, edge_attribution_patching
from viz.circuits import circuit_graph

e_base = edge_attribution_patching(base, ex)
e_unl = edge_attribution_patching(MODEL, ex)
cd = circuit_diff(e_base, e_unl, k=20)
print(f"top-20 circuits: Jaccard overlap {cd.jaccard:.2f}; {len(cd.lost)} edges lost, {len(cd.gained)} gained")
for u, v, a, b in cd.lost[:5]:
    print(f"  lost   {u:>8s} -> {v:<8s} score {a:+.3f} -> {b:+.3f}")
for u, v, a, b in cd.gained[:5]:
    print(f"  gained {u:>8s} -> {v:<8s} score {a:+.3f} -> {b:+.3f}")
circuit_graph(e_base, e_unl, k=20, title=f"Top-20 edges: base vs {NAME}")""",
    ),
    (
        "md",
        """## What to try next

* Other methods: RMU acts on one layer's activations, IdK and NPO fine-tune the whole model; compare their lens
  curves (`unlearned_models(world, ["idk", "npo_gd"])`).
* EAP-IG with a real corruption: `edge_attribution_patching(model, ex, corrupt=donor, method="eap-ig")` with a donor
  item of another person (same token length), and check faithfulness with `unpact.circuits.faithfulness`.
* Plot probabilities instead of ranks: `lens_grid(traj, value="prob")`.
* The audit saves lens trajectories and circuit diffs for the report (`AuditConfig(lens=True, circuits=3,
  lens_method="tuned")`), and turns the lens into a recovery test (`lens recovery`, white-box level; tutorial 4).""",
    ),
]

NB4: list[tuple[str, str]] = [
    (
        "md",
        """# Every level of evidence on one model

This tutorial audits **one** unlearned model (RMU on the micro toy world) at every threat level, each test with its
control, and reads how the levels combine into the verdict (`verdict.levels`):

* **black box**: prompt attacks, in-context relearning (what a user of the chat box can do);
* **white box**: hooks on the key tokens, linear probes, the logit lens, the unlearning direction, a soft prompt,
  attacks chosen from circuit and lens diffs (what someone running the weights can read);
* **weights**: relearning by fine-tuning, quantization (what someone who can change the weights can do).

It runs in about a minute on 2 CPU cores.""",
    ),
    ("code", SETUP),
    ("code", load_unlearned("rmu")),
    (
        "md",
        """## One audit, every level

The same `audit` call as in tutorial 1, with the representation and weight stages on. The settings are kept small
for the micro world: relearning runs 16 fine-tuning steps, the soft prompt 30 optimisation steps, the probes fit on
256 retain items. The **forget people are split into two halves that share no person** (A and B): whatever is
learnt or chosen (a soft prompt, a direction, fine-tuning data) uses half A, and is scored on half B. So a recovery
on half B cannot come from teaching the answers; it comes from knowledge still in the model.""",
    ),
    (
        "code",
        """import tempfile

from unpact.audit import AuditConfig, Models, audit

out = tempfile.mkdtemp(prefix="unpact-levels-")
config = AuditConfig(
    out=out,
    attacks=("restate", "repeat", "front", "sample", "embed_scale", "attn_bias"),
    attribution="loo",
    max_retain=32,
    n_retain_attacked=16,
    circuits=0,
    relearn_steps=16,
    weights_items=48,
    probe_items=256,
    soft_prompt_steps=30,
    diff_attack_items=16,
    standard_metrics=False,
    progress=False,
)
summary = audit(config, Models(base, unlearned, retain_only=retain_only), world.forget, world.retain)
m = summary.models["rmu"]
print(summary.table())""",
    ),
    (
        "md",
        """## Black box (and hooks): prompt attacks against the control

As in tutorial 1: the share of the forgotten items each attack recovers, next to the retain-only model under the
same attack on the same items, with 95% intervals clustered by fact. `embed_scale` and `attn_bias` are hooks
(white-box level); the rest only change the text or the decoding (black-box level).""",
    ),
    (
        "code",
        """from viz.recovery import recovery_chart

entries = {**m.scores.recovery, "any attack": m.scores.recovery_any}
recovery_chart({a: {"rate": e.rate.to_dict(), "control": e.control.to_dict()} for a, e in entries.items() if e.rate.n},
               title="rmu: recovery per attack vs the retain-only control")""",
    ),
    (
        "md",
        """## White box: is the answer still linearly readable?

A linear probe per layer is fit on **retain** people (their residual stream at the last prompt token, labelled with
their answer's first token) and tested on the forget people: its *rank accuracy* is the share of forget items whose
gold first token the probe ranks first among the candidates. The retain-only model, which never learnt the forget
people, is the floor; probes fit on shuffled labels (dotted) and the mean chance level show what a probe gets from
nothing. What to look for: the unlearned model's curve above the retain-only model's, at the layer the audit chose
(on validation data, marked), with intervals apart.""",
    ),
    (
        "code",
        """import numpy as np
from matplotlib.figure import Figure

fig = Figure(figsize=(6.5, 4), layout="constrained")
ax = fig.subplots()
for (name, mm), colour in zip(summary.models.items(), ("tab:blue", "tab:grey", "tab:red")):
    p = mm.sections.get("probes")
    if not p:
        continue
    x = np.arange(len(p["layers"]))
    acc = np.array(p["accuracy"])
    ax.errorbar(x, acc, yerr=[acc - np.array(p["lo"]), np.array(p["hi"]) - acc], fmt="-o", capsize=3, color=colour,
                label=name)
    ax.plot(x, p["shuffled"], ":", color=colour, lw=1)
    ax.plot(x[p["layer"]], acc[p["layer"]], "D", ms=11, mfc="none", color=colour)
    chosen = p["layers"][p["layer"]]
    print(f"{name:12s} probe rank accuracy per layer {np.round(acc, 2).tolist()} (chosen layer {chosen})")
ax.axhline(p["chance"], color="black", ls="--", lw=0.8, label="chance")
ax.set_xticks(x, p["layers"])
ax.set(xlabel="layer", ylabel="probe rank accuracy on forget items", ylim=(0, 1.05),
       title="Linear probes (solid, 95% CI; dotted: shuffled labels; diamond: chosen layer)")
ax.legend(fontsize=8)
fig""",
    ),
    (
        "md",
        """The other white-box tests, each against its own control (all in the evidence table below):

* **direction ablate / add**: the mean change unlearning made to the residual stream on half-A forget prompts is a
  direction $d$; removing it ($h \\leftarrow h - (h \\cdot \\hat d)\\hat d$) or adding the mean shift back on half B,
  against the same done with a direction from retain prompts;
* **soft prompt**: a few input embeddings learnt on half A with the weights frozen, scored on half B; the control is
  the retain-only model with its own soft prompt learnt the same way;
* **circuit-diff / lens-diff attacks**: heads, or a lens layer, chosen on half A from the base-vs-unlearned diffs,
  amplified on half B;
* **lens recovery**: the first distinguishing answer token is the top-1 of some layer's logit lens.

## Weights: can a little fine-tuning bring it back?

The **relearning** attack fine-tunes a copy of the model on half A of the forget facts (or on retain items, or on
unrelated text) and measures half B along the way; the retain-only model fine-tuned the same way is the control.
A model whose half-B accuracy rises faster than the control's (solid above dashed) held on to the facts it was not
shown. The `forget_b` curve trains on half B itself: the upper reference of how fast facts can be (re)learnt.""",
    ),
    (
        "code",
        """from unpact.audit import AuditDir
from unpact.weights import RelearnCurve

d = AuditDir(out)
fig = Figure(figsize=(7, 4), layout="constrained")
ax = fig.subplots()
colours = {"forget_a": "tab:red", "retain": "tab:blue", "unrelated": "tab:green", "forget_b": "tab:grey"}
for ts, colour in colours.items():
    mine, ctl = d.weights_path("rmu", "relearn", ts), d.weights_path("retain_only", "relearn", ts)
    if mine.exists() and ctl.exists():
        a, c = RelearnCurve.load(mine), RelearnCurve.load(ctl)
        ax.plot(np.array(a.steps) + 1, a.accuracy(), "-o", color=colour, label=f"rmu, trained on {ts}")
        ax.plot(np.array(c.steps) + 1, c.accuracy(), "--", color=colour, label=f"retain-only, trained on {ts}")
ax.set_xscale("log")
ax.set(xlabel="fine-tuning steps + 1", ylabel="half-B accuracy", ylim=(-0.03, 1.03),
       title="Relearning: rmu (solid) vs the retain-only control (dashed)")
ax.legend(fontsize=7, ncol=2)
fig""",
    ),
    (
        "md",
        """## Weights: quantization

Round-to-nearest quantization of the block weights (int8 per channel, int4 per channel, int4 in groups of 32). A
small unlearning update can be rounded away, putting the weights back on the base model's grid: the share of
quantized codes equal to the base model's is printed. What to look for: forget accuracy of the unlearned model
rising after quantization while the retain-only model's stays at its floor.""",
    ),
    (
        "code",
        """from unpact.audit.stages.weights import QuantEval
from unpact.weights import DEFAULT_SCHEMES

names = list(summary.models)
schemes = [s.name() for s in DEFAULT_SCHEMES]
fig = Figure(figsize=(7, 3.8), layout="constrained")
ax = fig.subplots()
width = 0.8 / len(names)
for j, name in enumerate(names):
    accs = []
    for scheme in schemes:
        path = d.weights_path(name, "quantize", scheme)
        q = QuantEval.load(path) if path.exists() else None
        accs.append(float(q.forget_correct.mean()) if q is not None and len(q.forget_correct) else np.nan)
        if q is not None and name == "rmu":
            print(f"rmu {scheme:13s} forget accuracy {accs[-1]:.2f}, codes equal to the base model's "
                  f"{q.code_agreement:.1%}")
    plain = summary.models[name].scores.forget_acc.rate
    ax.bar(np.arange(len(schemes) + 1) + j * width, [plain, *accs], width, label=name)
ax.set_xticks(np.arange(len(schemes) + 1) + width * (len(names) - 1) / 2, ["full precision", *schemes])
ax.set(ylabel="forget accuracy", ylim=(0, 1.05), title="Quantization: forget accuracy per scheme")
ax.legend(fontsize=8)
fig""",
    ),
    (
        "md",
        """## Every test, and the levels

All the paired tests of the model, by level: the rate on the model, the control's on the same items, the excess
with its clustered 95% interval, the one-sided p-value and, for each level's primary test, the Holm-corrected one.
The forest plot shows the excesses against the margin (`rule.min_excess`).""",
    ),
    (
        "code",
        """import pandas as pd

pd.DataFrame([{
    "level": e.level, "test": e.name, "primary": e.primary, "n": e.n,
    "model": round(e.rate.value, 3), "control": round(e.control.value, 3),
    "excess [95% CI]": f"{e.excess.value:+.2f} [{e.excess.lo:+.2f}, {e.excess.hi:+.2f}]",
    "p": round(e.p, 4), "p (Holm)": None if e.p_holm is None else round(e.p_holm, 4), "note": e.note,
} for e in m.evidence])""",
    ),
    ("code", EVIDENCE_PLOT + '\n\n\nevidence_plot("rmu", m, config.rule.min_excess)'),
    (
        "md",
        """## The verdict and its levels

Each level's primary test decides the level's outcome (`recoverable`, `residue`, `not_recoverable`,
`inconclusive`, `not_tested`); the verdict is `suppression` if any level is recoverable, `destruction` if none is but
the retain accuracy fell too far, `removal_with_residue` for a small significant excess, `removal` when every tested
level is not recoverable, else `inconclusive`. `verdict.evidence_level` names the level that decided a suppression.""",
    ),
    (
        "code",
        """v = m.verdict
print("verdict:", v.label, "| decided by:", v.evidence_level, "| destructive:", v.destructive)
print(v.reason)
print("verdict.levels:", v.levels)
for level, o in m.levels.items():
    print(f"  {level:10s} {o.outcome:16s} primary: {o.primary}; strongest: {o.strongest}")""",
    ),
    (
        "md",
        """## What to try next

* Audit another method here (`load_unlearned`: `unlearned_models(world, ["npo_gd"])`) and compare its levels.
* Give the weight attacks more room: `relearn_steps=64`, `weights_items=96`; or the soft prompt
  `soft_prompt_steps=100` (the default).
* Fit the probes on more retain people (`probe_items=1024`, the default) for tighter probe intervals.
* Look at the saved results: `representations/MODEL/...` and `weights/MODEL/...` in the audit directory, and the
  report (`viz.report.write_report(out)`) which draws all of them.
* docs/audit.md describes each test, its control and the verdict rule; docs/weights.md and
  docs/representations.md the attacks.""",
    ),
]

NB5: list[tuple[str, str]] = [
    (
        "md",
        """# Your own model, step by step

This tutorial takes a model that is not the toy world's through unpact: a real Hugging Face architecture (Llama),
saved to a directory and loaded with `unpact.load_model`, with a prompt template; the architecture map unpact
resolves and checks; the tracers (attribution, logit lens, circuits); and an audit. It runs in under a minute on 2
CPU cores and needs no network.

**Be clear about what the numbers mean:** the Llama built here has *random weights* and knows nothing, so every
attribution, lens and verdict below is noise. The tutorial shows the calls and the shapes. The last section points
the same calls at a real model directory (`UNPACT_MODEL_DIR`; in the docs build, the micro toy world's trained base
model).""",
    ),
    (
        "md",
        """## 1. A model directory

unpact reads local directories written by `save_pretrained` (safetensors + config + tokenizer); it never fetches
from the hub: download a model first (e.g. `huggingface-cli download ORG/NAME --local-dir DIR`) and pass `DIR`.
Here a 2-layer, 64-wide Llama is built from a config, offline, with a small byte-level BPE tokenizer trained in
memory (`unpact.testing.tiny_tokenizer`), and saved.""",
    ),
    (
        "code",
        """%matplotlib inline
import tempfile
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notice in a notebook without widgets
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from unpact.testing import tiny_tokenizer

torch.set_num_threads(1)
hf_logging.disable_progress_bar()
tok = tiny_tokenizer()
config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
torch.manual_seed(0)
model = LlamaForCausalLM(config).eval()
MY_MODEL = tempfile.mkdtemp(prefix="my-llama-")
model.save_pretrained(MY_MODEL)
tok.save_pretrained(MY_MODEL)
print(MY_MODEL, sum(p.numel() for p in model.parameters()), "parameters")""",
    ),
    (
        "md",
        """## 2. Load it with its prompt format

A model answers well only in the format it was trained with (docs/prompts.md). `PromptFormat` holds a `template`
with `{question}`, the text between prompt and answer (`answer_sep`), and whether to use the tokenizer's chat
template. Every encoding of an item goes through the model's format; an `Example`'s `prompt` stays the bare
question, so attacks rewrite the question and never the template. On the command line the same is
`--template "Question: {question}\\nAnswer:"` (`--answer-sep`, `--chat-template`, `--system-prompt`).""",
    ),
    (
        "code",
        """from unpact import Example, PromptFormat, load_model

fmt = PromptFormat(template="Question: {question}\\nAnswer:")
subject = load_model(MY_MODEL, prompt_format=fmt, name="my-llama")
print(subject)
ex = Example("ada.city", "Where was Ada Lovelace born?", "London", subject="Ada Lovelace")
enc = subject.encode(ex)
p0, p1 = enc.prompt_span
print("prompt the model sees:", repr(enc.prompt_text))
print("the question's tokens:", repr(subject.tokenizer.decode(enc.input_ids[p0:p1])))""",
    ),
    (
        "md",
        """## 3. The architecture map, and its check

Every tracer reaches into the model through an **architecture map** (`ArchSpec`): where the token embedding, the
blocks, each block's attention, its output projection and MLP, the final norm and the unembedding live, plus what
the architecture allows (parallel residual, additive writes for circuits, a 4-D attention mask for the `attn_bias`
attack). Registered families (Llama, GPT-2, Qwen2, Mistral, Gemma, ...) have one; any other family is mapped from
its module structure and **checked with a few forwards** (`detect_architecture`): the decoded final-normed residual
must reproduce the model's logits, the hooks must see what the model computes. A feature whose check fails is
switched off with the reason, instead of silently giving wrong numbers.""",
    ),
    (
        "code",
        """import pandas as pd

from unpact import detect_architecture

spec = subject.spec
print("registered map:", spec.model_type, "(detected from the structure)" if spec.detected else "(from the registry)")
det = detect_architecture(model)
pd.DataFrame({
    "registered": {k: getattr(spec, k) for k in ("embed", "blocks", "attn", "attn_out_proj", "mlp", "final_norm",
                                                  "unembed", "parallel_residual", "additive_writes", "decode_ok",
                                                  "lens_ok", "accepts_4d_mask")},
    "detected": {k: det.found.get(k, getattr(det.spec, k, None) if det.spec else None)
                 for k in ("embed", "blocks", "attn", "attn_out_proj", "mlp", "final_norm", "unembed",
                           "parallel_residual", "additive_writes", "decode_ok", "lens_ok", "accepts_4d_mask")},
})""",
    ),
    (
        "code",
        """print("detection usable:", det.ok, "| switched off:", det.disabled or "nothing")
for check, outcome in det.checks.items():
    print(f"  {check}: {outcome}")""",
    ),
    (
        "md",
        """## 4. Tracers on it

The same calls as on the toy world. With random weights the pictures have the right shape and no meaning: a
trained model's attribution concentrates on the words that carry the fact, a random one's does not.""",
    ),
    (
        "code",
        """from IPython.display import display

from unpact.attribution import attribute
from unpact.circuits import edge_attribution_patching
from unpact.lens import logit_lens
from viz.attribution import token_heatmap
from viz.circuits import circuit_graph
from viz.lens import lens_grid

a = attribute(subject, ex, method="ig", n_steps=16)
print(f"IG relative completeness error {a.relative_completeness_error:.1e}")
display(token_heatmap(a, title="Integrated gradients on the random Llama (noise)"))
display(lens_grid(logit_lens(subject, [ex])[0], value="rank", title="Logit lens on the random Llama (noise)"))
display(circuit_graph(edge_attribution_patching(subject, ex), k=15, title="Top-15 EAP edges (noise)"))""",
    ),
    (
        "md",
        """## 5. An audit of your models

`audit(config, Models(base, {name: unlearned, ...}, retain_only=control), forget, retain)` takes any `Subject`s.
Here the "unlearned" model and the "control" are the same Llama with other random seeds and the items a handful of
invented questions. Before its work the audit checks that the base model answers at least
`min_base_accuracy` of the first forget and retain items under the prompt format (a wrong template shows up there,
not as a misleading verdict); a random model answers none, so the check is switched off here (`0`). The attacks
emphasise the items' own `keywords` (`keywords="oracle"`), since a random model's attribution picks noise. The verdict
rule needs at least `rule.min_known` forget items the base model knows: with a base model that knows none, the
audit has nothing to judge, and says so.""",
    ),
    (
        "code",
        """import tempfile

from unpact.audit import AuditConfig, Models, audit


def random_llama(seed):
    torch.manual_seed(seed)
    return load_model(LlamaForCausalLM(config).eval(), tok, prompt_format=fmt, name=f"llama-seed{seed}")


people = [("Ada Lovelace", "London", "1815"), ("Alan Turing", "London", "1912"), ("Marie Curie", "Warsaw", "1867"),
          ("Niels Bohr", "Copenhagen", "1885"), ("Emmy Noether", "Erlangen", "1882"), ("Kurt Goedel", "Brno", "1906")]
items = [Example(f"{n.split()[1].lower()}.{attr}", q.format(n), ans, subject=n, keywords=tuple(n.split()))
         for n, city, year in people
         for attr, q, ans in (("city", "Where was {} born?", city), ("year", "In which year was {} born?", year))]
forget, retain = items[:4], items[4:]
cfg = AuditConfig(out=tempfile.mkdtemp(prefix="my-audit-"), attacks=("restate", "repeat", "embed_scale"),
                  keywords="oracle", attribution="loo", min_base_accuracy=0.0, relearn=False, quantize=False,
                  probes=False, directions=False, soft_prompt=False, diff_attacks=False, standard_metrics=False,
                  circuits=0, progress=False)
summary = audit(cfg, Models(subject, {"other_seed": random_llama(1)}, retain_only=random_llama(2)), forget, retain)
print(summary.table())
print(summary.models["other_seed"].verdict.label, "-", summary.models["other_seed"].verdict.reason)""",
    ),
    (
        "md",
        """## 6. Point it at a real model

Set `MODEL_DIR` to your model's directory (or the environment variable `UNPACT_MODEL_DIR`) and give its prompt
format. Without one, this cell uses the micro toy world's trained base model and one of its own questions, so the
attribution below is a real one: compare it with the random Llama's above.""",
    ),
    (
        "code",
        """import os
from pathlib import Path

from unpact.toyworld import build_toyworld

MODEL_DIR = os.environ.get("UNPACT_MODEL_DIR")  # e.g. "/models/Llama-3.2-1B-Instruct"
world = build_toyworld("micro", cache_dir=os.environ.get("UNPACT_CACHE"), progress=False)
if MODEL_DIR is None:
    MODEL_DIR = str(world.base_path)
if Path(MODEL_DIR).resolve() == world.base_path.resolve():  # the toy world's model: its own questions and format
    real, question = load_model(MODEL_DIR), world.forget[0]
else:  # your model: your format (PromptFormat(chat=True) for a chat model) and your question
    real = load_model(MODEL_DIR, prompt_format=PromptFormat(template="Question: {question}\\nAnswer:"))
    question = Example("q1", "What is the capital of France?", "Paris", keywords=("France",))
print(real)
token_heatmap(attribute(real, question, method="loo"), title=f"{question.prompt} -> {question.answer}")""",
    ),
    (
        "md",
        """## What to try next

* Another architecture: swap `LlamaConfig`/`LlamaForCausalLM` for `Qwen2Config`/`Qwen2ForCausalLM` or
  `GPT2Config`/`GPT2LMHeadModel`; `unpact.testing.tiny_model(arch)` builds any of the supported ones.
* A family unpact does not register (e.g. OLMo) goes through `detect_architecture`; docs/architecture.md and
  docs/models.md show how to register an `ArchSpec` yourself.
* A chat model: `PromptFormat(chat=True, system_prompt=...)`, and check the rendered prompt with `subject.encode`.
* Your real audit, from the command line: `unpact audit --base DIR --unlearned name=DIR --retain-only DIR --forget
  F.json --retain R.json --template "Question: {question}\\nAnswer:" --out OUT`, then `unpact report OUT`.
* On a GPU: `load_model(DIR, device="cuda", dtype="bfloat16")`.""",
    ),
]

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "01_gone_or_hidden.ipynb": NB1,
    "02_attribution_and_keywords.ipynb": NB2,
    "03_lens_and_circuits.ipynb": NB3,
    "04_every_level_of_evidence.ipynb": NB4,
    "05_your_own_model.ipynb": NB5,
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


def stale(folder: Path = HERE) -> list[Path]:
    """Notebooks in ``folder`` that this file no longer generates (removed by ``python notebooks/_build.py``)."""
    return sorted(p for p in folder.glob("*.ipynb") if p.name not in NOTEBOOKS)


if __name__ == "__main__":
    for p in stale():
        p.unlink()
        print("removed", p)
    for p in build():
        print(p)
