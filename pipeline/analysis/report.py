"""The study's results as one markdown page for a reviewer: Kendall's tau per setting, the mIoU table with the best
model of each setting in bold, what the bootstrap says is beyond the noise, the zero-shot means and links to the
figures. With the `ranking.json` of a base revision, every number also shows its change, and a section lists what
moved beyond the base's noise.

"Beyond the noise" uses the intervals the rank stage writes (`pipeline.analysis.bootstrap`): an mIoU or a tau
moved when its new value lies outside the base revision's interval, which covers another draw of the validation
images and of the seeds that were run (not other training randomness).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

MOVED_LIMIT = 40
"""Rows of the "moved beyond the noise" list; the rest is counted."""


@dataclass(frozen=True)
class Figures:
    """Links (relative or absolute) to the figures the report points at, in the order shown."""
    links: list[tuple[str, str]] = field(default_factory=list)  # (title, href)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pct(value) -> str:
    return f"{value * 100:.1f}" if _finite(value) else "n/a"


def _num(value, digits: int = 2, sign: bool = False) -> str:
    if not _finite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _delta(new, old, scale: float = 1.0, digits: int = 2) -> str:
    """The change new - old (x scale), or `new` / `gone` / blank where one side lacks the value."""
    if old is None and new is None:
        return ""
    if old is None or not _finite(old):
        return "new" if _finite(new) else ""
    if new is None or not _finite(new):
        return "gone"
    return f"{(new - old) * scale:+.{digits}f}"


def _outside(value, entry: dict | None, low: str, high: str) -> bool:
    """`value` lies outside the interval [entry[low], entry[high]] (False where either is unknown)."""
    if entry is None or not _finite(value) or not (_finite(entry.get(low)) and _finite(entry.get(high))):
        return False
    return value < entry[low] or value > entry[high]


def settings_of(ranking: dict) -> list[str]:
    return list(ranking.get("settings", {}))


def models_of(ranking: dict) -> list[str]:
    return list(ranking.get("models", {}))


def tau_table(current: dict, base: dict | None, base_setting: str, confidence: float) -> list[str]:
    with_base = base is not None
    head = (f"| setting | τ | {confidence:.0%} interval | P(τ < 1) | time × | trainable params (M) |"
            + (" Δτ vs base | base τ interval |" if with_base else ""))
    lines = [head, "|---|---:|:---:|---:|---:|---:|" + ("---:|:---:|" if with_base else "")]
    for setting in settings_of(current):
        row = current["settings"][setting]
        old = (base or {}).get("settings", {}).get(setting) if with_base else None
        name = f"{setting} (base)" if setting == base_setting else setting
        interval = (f"[{_num(row.get('tau_ci_low'), sign=True)}, {_num(row.get('tau_ci_high'), sign=True)}]"
                    if _finite(row.get("tau_ci_low")) else "n/a")
        time = f"{row['time_ratio']:.2f}×" if _finite(row.get("time_ratio")) else "n/a"
        cells = [name, _num(row.get("tau"), sign=True), interval, _num(row.get("p_tau_below_1")), time,
                 _num(row.get("trainable_params_m"), 2)]
        if with_base:
            moved = _outside(row.get("tau"), old, "tau_ci_low", "tau_ci_high")
            delta = _delta(row.get("tau"), (old or {}).get("tau"))
            cells += [f"**{delta}**" if moved else delta,
                      f"[{_num(old.get('tau_ci_low'), sign=True)}, {_num(old.get('tau_ci_high'), sign=True)}]"
                      if old and _finite(old.get("tau_ci_low")) else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def miou_table(current: dict, base: dict | None) -> list[str]:
    """Models x settings: mIoU % ± std over seeds, best of each setting in bold, with its change vs base."""
    settings, models = settings_of(current), models_of(current)
    lines = ["| model | " + " | ".join(settings) + " |", "|---|" + "---:|" * len(settings)]
    for model in models:
        cells = []
        for setting in settings:
            entry = current["models"][model].get(setting)
            if entry is None:
                cells.append("")
                continue
            text = _pct(entry.get("miou"))
            if _finite(entry.get("miou_std")) and entry["miou_std"] > 0:
                text += f" ±{entry['miou_std'] * 100:.1f}"
            if entry.get("rank") == 1:
                text = f"**{text}**"
            if base is not None:
                old = base.get("models", {}).get(model, {}).get(setting)
                delta = _delta(entry.get("miou"), (old or {}).get("miou"), 100, 1)
                if delta and delta not in ("+0.0", "-0.0"):
                    moved = _outside(entry.get("miou"), old, "miou_ci_low", "miou_ci_high")
                    text += f" ({delta}{'†' if moved else ''})"
            cells.append(text)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _testable(new: dict, old: dict | None, key: str) -> bool:
    return (old is not None and _finite(new.get(key)) and _finite(old.get(key))
            and _finite(old.get(f"{key}_ci_low")) and _finite(old.get(f"{key}_ci_high")))


def moved(current: dict, base: dict) -> tuple[list[str], int, int]:
    """Lines for what lies outside the base revision's intervals, the number of values compared (those the base
    has an interval for), and the number of them that moved."""
    items = []
    compared = 0
    for setting, row in current.get("settings", {}).items():
        old = base.get("settings", {}).get(setting)
        if not _testable(row, old, "tau"):
            continue
        compared += 1
        if _outside(row["tau"], old, "tau_ci_low", "tau_ci_high"):
            items.append((abs(row["tau"] - old["tau"]) * 100,
                          f"- τ of **{setting}**: {_num(old['tau'], sign=True)} → {_num(row['tau'], sign=True)} "
                          f"(base interval [{_num(old['tau_ci_low'], sign=True)}, "
                          f"{_num(old['tau_ci_high'], sign=True)}])"))
    for model, entries in current.get("models", {}).items():
        for setting, entry in entries.items():
            old = base.get("models", {}).get(model, {}).get(setting)
            if not _testable(entry, old, "miou"):
                continue
            compared += 1
            if _outside(entry["miou"], old, "miou_ci_low", "miou_ci_high"):
                rank = (f", rank {old.get('rank')} → {entry.get('rank')}" if old.get("rank") != entry.get("rank")
                        else "")
                items.append((abs(entry["miou"] - old["miou"]) * 100,
                              f"- mIoU of **{model}** in {setting}: {_pct(old['miou'])} → {_pct(entry['miou'])} "
                              f"({_delta(entry['miou'], old['miou'], 100, 1)} points; base interval "
                              f"[{_pct(old['miou_ci_low'])}, {_pct(old['miou_ci_high'])}]{rank})"))
    items.sort(key=lambda item: -item[0])
    lines = [text for _, text in items[:MOVED_LIMIT]]
    if len(items) > MOVED_LIMIT:
        lines.append(f"- … and {len(items) - MOVED_LIMIT} more")
    return lines, compared, len(items)


def separation(current: dict, flips: list[dict], base_setting: str, confidence: float) -> list[str]:
    """Settings whose ranking differs from the base beyond the noise, and the pairs of models the evaluation does
    not separate."""
    alpha = 1 - confidence
    lines = []
    reorder = [s for s, row in current.get("settings", {}).items()
               if s != base_setting and _finite(row.get("tau_ci_high")) and row["tau_ci_high"] < 1]
    unsure = [s for s, row in current.get("settings", {}).items()
              if s != base_setting and _finite(row.get("tau")) and row["tau"] < 1 and s not in reorder]
    lines.append("- Settings that reorder the models beyond the noise (τ interval below 1): "
                 + (", ".join(f"**{s}**" for s in reorder) if reorder else "none") + ".")
    if unsure:
        lines.append("- Settings with τ < 1 whose interval reaches 1 (a reordering the evaluation cannot confirm): "
                     + ", ".join(unsure) + ".")
    ties = [f for f in flips if f.get("p_flip", 0) > alpha]
    by_setting: dict[str, list[str]] = {}
    for f in ties:
        by_setting.setdefault(f["setting"], []).append(f"{f['model_a']}/{f['model_b']} ({f['p_flip']:.2f})")
    if flips:
        lines.append(f"- Pairs of models not separated (their order flips in more than {alpha:.0%} of the "
                     "resamples, P in brackets): " + ("none" if not by_setting else ""))
        lines += [f"  - {setting}: " + ", ".join(pairs) for setting, pairs in by_setting.items()]
    return lines


def zeroshot_table(current: dict, base: dict | None) -> list[str]:
    """Mean zero-shot mIoU per tower-method over all benchmarks and over those without background (with their
    changes against the base), the chance level of the latter, and the taus against the fine-tuned ranking."""
    runs = current.get("zeroshot", {})
    if not runs:
        return []
    columns = (("zeroshot", "mean zero-shot mIoU %"), ("zeroshot_without_background", "without background %"))
    header, rule = "| tower-method |", "|---|"
    for _, title in columns:
        header += f" {title} |" + (" Δ vs base |" if base is not None else "")
        rule += "---:|" + ("---:|" if base is not None else "")
    lines = [header, rule]
    for name in runs:
        cells = [name]
        for key, _ in columns:
            value = current.get(key, {}).get(name)
            cells.append(_pct(value))
            if base is not None:
                cells.append(_delta(value, base.get(key, {}).get(name), 100, 1))
        lines.append("| " + " | ".join(cells) + " |")
    chance = current.get("zeroshot_chance_without_background")
    if chance is not None:
        lines += ["", f"Chance (a uniformly random class per pixel) without background: {_pct(chance)} %."]
    taus = current.get("zeroshot_vs_finetuned_tau", {})
    if taus:
        lines += ["", "Kendall's τ between the zero-shot and the fine-tuned ranking of the towers: "
                  + ", ".join(f"{method} {_num(tau, sign=True)}" for method, tau in taus.items())]
    return lines


def render(current: dict, flips: list[dict], base_setting: str, confidence: float, figures: Figures,
           base: dict | None = None, base_name: str | None = None, base_confidence: float | None = None) -> str:
    """The page; `confidence` is the level of the current intervals, `base_confidence` that of the base's
    (default: the same)."""
    base_confidence = confidence if base_confidence is None else base_confidence
    title = "# Study results" + (f" against `{base_name}`" if base_name else "")
    lines = [title, ""]
    if base is not None:
        lines += [f"Changes are against `{base_name}`. **Bold** Δτ and † on an mIoU change: the new value lies "
                  f"outside the base revision's {base_confidence:.0%} bootstrap interval (another draw of the "
                  "validation images and seeds); other changes are within that noise.", ""]
    lines += [f"## Kendall's τ against the {base_setting} setup", ""]
    lines += tau_table(current, base, base_setting, confidence)
    lines += ["", "## mIoU % per model and setting", "",
              "Mean over seeds (± their std where there are several); **bold**: the best model of the setting"
              + (", in brackets the change in points." if base is not None else "."), ""]
    lines += miou_table(current, base)
    if base is not None:
        items, compared, count = moved(current, base)
        lines += ["", "## What moved beyond the noise", ""]
        if compared:
            lines.append(f"{count} of the {compared} mIoUs and τs that both revisions hold lie outside the base's "
                         f"{base_confidence:.0%} interval" + (":" if items else "."))
        else:
            lines.append(f"`{base_name}` holds no bootstrap intervals (an older rank stage), so no change can be "
                         "tested against the noise; the tables above show the changes.")
        if items:
            lines += [""] + items
    lines += ["", "## Which differences are real", ""]
    lines += separation(current, flips, base_setting, confidence)
    zero = zeroshot_table(current, base)
    if zero:
        lines += ["", "## Zero-shot segmentation (SimZSS / LiT)", ""] + zero
    if figures.links:
        lines += ["", "## Figures", ""] + [f"- [{title}]({href})" for title, href in figures.links]
    return "\n".join(lines) + "\n"


def figure_links(settings: list[str], models: list[str], base_setting: str, seeds: list[int],
                 href) -> Figures:
    """The figures of the study (rank's, the figures stage's), linked through `href(path in the repository)`."""
    links = [("Kendall's τ per setting (paper Figure 1)", href("plots/figures/tau.png")),
             ("Every model's rank per setting with its interval", href("plots/figures/ranks.png"))]
    links += [(f"mIoU in {s} against {base_setting}", href(f"plots/figures/miou_{s}.png"))
              for s in settings if s != base_setting]
    links.append((f"Per-class IoU per model ({base_setting})", href("plots/per_class/iou.png")))
    links += [(f"Confusion matrix of {m} ({base_setting})", href(f"plots/per_class/confusion_{m}.png"))
              for m in models]
    if seeds:
        links += [(f"Predictions of {m} ({base_setting}, seed {seeds[0]}; DVC-cached)",
                   href(f"plots/runs/{m}-{base_setting}-{seeds[0]}.png")) for m in models]
    return Figures(links)
