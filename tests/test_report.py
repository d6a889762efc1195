"""The HTML report: every section in headless Chromium, numbers from the result files, any metric's units."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from paramreuse.cli import app
from paramreuse.report import (
    FIGURES,
    SECTIONS,
    MetricStyle,
    load_run,
    metric_style,
    render_report,
    run_answer,
    run_verdict,
)
from paramreuse.report.verdict import compact, plan_gain, reuses, strategy_label, verdict_sentence
from tests.conftest import TINY_ARCH

runner = CliRunner()
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu"]
# Records, once the page has loaded, how wide each image decoded to (0: not an image).
DECODE_PROBE = (
    "<script>addEventListener('load',()=>{for(const i of document.images)"
    "i.setAttribute('data-decoded',i.naturalWidth)})</script>"
)
REPORT_STUDY = f"""
arch = "{TINY_ARCH}"
[source]
classes = "0-4"
[target]
classes = "5-9"
shots = 5
[training.source]
epochs = 2
batch_size = 32
lr = 0.01
min_steps = 60
[training.fewshot]
min_steps = 30
[training.full]
epochs = 1
batch_size = 32
[sweep]
bootstrap = 100
[transfer]
shots = [3, 5]
seeds = 2
[transfer.training]
min_steps = 10
"""


@pytest.fixture(scope="module")
def study_run(tmp_path_factory, fake_fmnist_dir):
    """A finished tiny study (a few seconds of training) and what its command printed."""
    folder = tmp_path_factory.mktemp("report-study")
    (folder / "tiny.toml").write_text(REPORT_STUDY)
    args = ["study", "--config", str(folder / "tiny.toml"), "--out", str(folder / "run"), "--device", "cpu",
            "--data-dir", str(fake_fmnist_dir)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return folder / "run", result


@pytest.fixture(scope="module")
def study_dir(study_run) -> Path:
    """The tiny study's folder: the result files a report is made from."""
    return study_run[0]


def test_study_summary_ends_with_the_first_box(study_run):
    """The closing output: the verdict in full, then the box (as results.json stores it), then where the files are."""
    run, result = study_run
    text = " ".join(result.stdout.replace("─", " ").split())  # rich wraps long lines; the box opens with a rule
    box = run_answer(load_run(run))
    assert json.loads((run / "results.json").read_text())["answer"] == box.to_dict()
    assert "Verdict in full: " + run_verdict(load_run(run)) in text
    assert "load it with `paramreuse train --init FILE` or paramreuse.load_checkpoint(FILE)" in text
    closing = "The answer " + " ".join(f"{label}: {line}" for label, line in box.lines())
    assert text.endswith(f"{' '.join(closing.split())} results: {run / 'results.json'} report: {run / 'report.html'}")
    lines = result.stdout.splitlines()
    assert any(str(run / "model.safetensors") in line for line in lines)  # the model's path whole on one line
    box_lines = lines[lines.index(next(line for line in lines if line.startswith("The answer"))):-1]
    assert all(len(line) <= 80 or str(run) in line for line in box_lines), box_lines  # a pipe: 80 columns
    assert "eta" in result.stderr and "Verdict" not in result.stderr  # progress on stderr, the summary on stdout


# --- Chromium ---------------------------------------------------------------------------------------------------


def chromium() -> str:
    path = os.environ.get("PARAMREUSE_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail(
            "chromium is not installed, so the report cannot be checked in a browser: run `make setup` "
            "(scripts/ensure-chromium.sh installs Debian's chromium) or set PARAMREUSE_CHROMIUM to a Chromium binary",
            pytrace=False,
        )
    return path


def browse(page: Path, profile: Path, *args: str) -> str:
    """Run headless Chromium on ``page`` and return its stdout."""
    command = [
        chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *args,
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class ReportDom(HTMLParser):
    """Sections (id -> heading) and images (id -> attributes) of a DOM as Chromium serialised it."""

    def __init__(self, text: str):
        super().__init__()
        self.sections: dict[str, str] = {}
        self.images: dict[str, dict] = {}
        self._open: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and attrs.get("id"):
            self.sections[attrs["id"]] = ""
            self._open = attrs["id"]
        elif tag == "h2" and self._open:
            self.sections[self._open] = None  # the next data is the heading
        elif tag == "img":
            self.images[attrs.get("id", f"anonymous-{len(self.images)}")] = attrs | {"section": self._open}

    def handle_data(self, data):
        if self._open and self.sections.get(self._open) is None:
            self.sections[self._open] = data.strip()


def report_problems(dom: str) -> list[str]:
    """What is missing from a rendered report: sections, headings, figures, decoded images."""
    parsed = ReportDom(dom)
    problems = [f"missing section #{key}" for key in SECTIONS if key not in parsed.sections]
    problems += [f"section #{key} has no heading" for key, title in parsed.sections.items() if not title]
    for name in FIGURES:
        image = parsed.images.get(f"fig-{name}")
        if image is None:
            problems.append(f"missing figure fig-{name}")
            continue
        src = image.get("src", "")
        if not src.startswith("data:image/png;base64,") or len(src) < 1000:
            problems.append(f"figure fig-{name} is not an embedded PNG")
        if int(image.get("data-decoded") or 0) < 100:
            problems.append(f"figure fig-{name} did not decode in the browser")
    return problems


def with_probe(html: str) -> str:
    return html.replace("</body>", DECODE_PROBE + "</body>")


def test_report_opens_in_headless_chromium(study_dir, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(with_probe((study_dir / "report.html").read_text()))
    dom = browse(page, tmp_path / "profile", "--dump-dom")
    assert report_problems(dom) == []
    parsed = ReportDom(dom)
    assert list(parsed.sections) == list(SECTIONS)  # every section, in page order
    shot = tmp_path / "screenshot.png"
    browse(study_dir / "report.html", tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,3000")
    with Image.open(shot) as image:
        assert image.size == (1200, 3000)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50  # plots drawn, not a blank page


FOLD = (1280, 720)  # a laptop's first screen at 1280 px wide, the browser's bars left out
# Records, once laid out, where the first box sits and how large the viewport is.
BOX_PROBE = (
    "<script>addEventListener('load',()=>{const r=document.getElementById('verdict-sentence')"
    ".getBoundingClientRect();document.body.setAttribute('data-box',JSON.stringify([r.left,r.top,r.right,"
    "r.bottom,innerWidth,innerHeight]))})</script>"
)


def test_the_whole_first_box_is_on_the_first_screen_at_1280_px(study_dir, tmp_path):
    """Issue 28: in a real browser 1280 px wide, the box ends above the fold, and the screenshot shows it there."""
    page = tmp_path / "report.html"
    page.write_text((study_dir / "report.html").read_text().replace("</body>", BOX_PROBE + "</body>"))
    size = f"--window-size={FOLD[0]},{FOLD[1]}"
    box = lambda dom: json.loads(re.search(r'data-box="([^"]*)"', dom).group(1))  # noqa: E731
    left, top, right, bottom, width, height = box(browse(page, tmp_path / "profile", size, "--dump-dom"))
    assert width == FOLD[0] and height <= FOLD[1]  # headless Chromium may keep room for its bars
    assert 0 < top < bottom <= height and right <= width, (top, bottom, height)
    assert bottom - top > 100  # the box's lines laid out, not an empty element
    shot = tmp_path / "fold.png"
    browse(page, tmp_path / "profile", size, f"--screenshot={shot}")
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
        assert rgb.size == FOLD
        border = {(0x22, 0xAA, 0x77), (0xCC, 0x44, 0x44)}  # the box's left border: reuse S (green), scratch (red)
        column = [rgb.getpixel((int(left) + 2, y)) for y in range(int(top) + 2, int(bottom) - 2)]
        assert set(column) <= border and column, set(column)  # drawn from the box's top to its bottom, on screen
    pushed = tmp_path / "pushed.html"  # the check sees a box pushed below the fold
    pushed.write_text(page.read_text().replace("<h1>", "<div style='height:700px'></div><h1>"))
    assert box(browse(pushed, tmp_path / "profile", size, "--dump-dom"))[3] > height


def test_a_missing_section_or_broken_plot_fails_the_check(study_dir, tmp_path):
    html = (study_dir / "report.html").read_text()
    html = re.sub(r"<section id='cumulative'>.*?</section>", "", html, flags=re.DOTALL)
    html = re.sub(r"(id=\"fig-transfer\"[^>]*src=\"data:image/png;base64,)[^\"]*", r"\1" + "A" * 2000, html)
    page = tmp_path / "broken.html"
    page.write_text(with_probe(html))
    problems = report_problems(browse(page, tmp_path / "profile", "--dump-dom"))
    assert problems == [
        "missing section #cumulative",
        "missing figure fig-cumulative",
        "figure fig-transfer did not decode in the browser",
    ]


# --- content ------------------------------------------------------------------------------------------------------


def test_report_numbers_come_from_the_result_files(study_dir):
    html = (study_dir / "report.html").read_text()
    run = load_run(study_dir)
    sentence = run_verdict(run)
    box = run_answer(run)
    lines = "".join(f"<p class='{key}'><strong>{label}:</strong> {escape(text)}</p>" for key, label, text in box.entries())
    assert f"id='verdict-sentence' role='status'>{lines}</div>" in html
    assert escape(f"The verdict in full: {sentence}") in html
    assert box.decision.startswith("Reuse S" if reuses(run.plan) else "Train from scratch")
    assert sentence.startswith("Reuse S" if reuses(run.plan) else "Train the target from scratch")
    assert run.plan["decision"] == ("reuse" if reuses(run.plan) else "scratch")
    assert run.plan["network"] is not None and "against fresh training on" in sentence
    for name in FIGURES:  # the PNG beside the report is the embedded one
        png = (study_dir / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert base64.b64encode(png).decode() in html
    for row in run.sweep["cumulative"]:
        assert f"<td class='n'>{row['value']:.3f}</td>" in html
    for name, entry in run.transfer["strategies"].items():  # two seeds: means without a CI
        cell = f"<td class='t'>{strategy_label(name)}</td><td class='n'>{entry['by_shots']['3']['mean']:.3f} ["
        assert cell + "not enough seeds (2 &lt; 3)]</td>" in html
    assert "<td class='t'>best-depth (oracle)</td>" in html and "<td class='t'>best-depth</td>" not in html
    assert f"<td class='n'>{run.plan['thresholds']['rmse_position']:.4f}</td>" in html
    assert run.results["environment"]["torch"] in html
    model = run.results["model"]  # the recommended model, named in the first box with its own test metric
    assert escape(f"({model['strategy']}, seed 0, {model['shots']} shots per class, test accuracy {model['test_metric']:.3f}) is {model['path']}") in html


def test_report_rerenders_from_result_files_alone(study_dir, tmp_path):
    copy = tmp_path / "run"
    for path in study_dir.rglob("*.json"):
        (copy / path.relative_to(study_dir)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy / path.relative_to(study_dir))
    assert not list(copy.rglob("*.safetensors"))
    path = render_report(copy, tmp_path / "elsewhere")
    assert path == tmp_path / "elsewhere" / "report.html" and not (copy / "report.html").exists()
    assert sorted(p.name for p in path.parent.glob("*.png")) == sorted(f"{n}.png" for n in FIGURES)


def test_report_command_json_and_errors(study_dir, tmp_path):
    result = runner.invoke(app, ["report", str(study_dir), "--out", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["report"] == str(tmp_path / "report.html") and Path(printed["report"]).is_file()
    assert printed["sections"] == list(SECTIONS) and all(Path(f).is_file() for f in printed["figures"])
    assert printed["verdict"] == run_verdict(load_run(study_dir))
    assert printed["answer"] == run_answer(load_run(study_dir)).to_dict()
    assert runner.invoke(app, ["report", str(study_dir), "--out", str(tmp_path), "--quiet"]).stdout == ""
    human = runner.invoke(app, ["report", str(study_dir), "--out", str(tmp_path)])
    assert "report:" in human.stdout and ("Reuse S" in human.stdout or "from scratch" in human.stdout)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text("{not json")
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.json").write_text('{"comparisons": {}}')
    cases = ((tmp_path / "none", "has no results.json"), (broken, "is not valid JSON"), (old, "lack the key 'plan'"))
    for folder, message in cases:
        bad = runner.invoke(app, ["report", str(folder)])
        assert bad.exit_code == 2 and message in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.output


# --- the verdict and metric units, on hand-made result files ---------------------------------------------------


def fake_plan(decisions: list[str], reusable: bool, drop: float) -> dict:
    layers = [{"name": f"u{i}", "kind": "conv2d", "decision": d} for i, d in enumerate(decisions)]
    thresholds = {"network_tolerance": 0.02, "layer_tolerance": 0.02, "rmse_position": 0.5}
    scratch = not any(d.startswith("reuse") for d in decisions)
    network = {"choice": "scratch" if scratch else "reuse", "difference": -0.1 if scratch else 0.1,
               "ci": [-0.2, -0.02] if scratch else [0.02, 0.2], "n": 40, "rule": "the rule"}  # fmt: skip
    return {"network_reusable": reusable, "network_drop": drop, "thresholds": thresholds, "layers": layers,
            "network": network}  # fmt: skip


def fake_transfer(plan_runs: list[float], scratch_runs: list[float], p: float | None = 0.01) -> dict:
    entry = lambda runs: {"mean": sum(runs) / len(runs), "ci": [min(runs), max(runs)], "runs": runs}  # noqa: E731
    return {
        "headline_shots": 10,
        "strategies": {"scratch": entry(scratch_runs), "plan": entry(plan_runs)},
        "significance": {"plan_vs_scratch": {"p": p, "test": "paired t-test"}},
    }


def test_verdict_says_reusable_which_units_and_the_gain():
    plan = fake_plan(["reuse-frozen"] * 3 + ["reuse-finetuned", "reinit"], True, 0.01)
    sentence = verdict_sentence(plan, fake_transfer([0.80, 0.82, 0.84], [0.70, 0.71, 0.75]), metric_style("accuracy"))
    assert sentence.startswith(
        "Reuse S: S-initialised training scored +0.100 accuracy against fresh training on 40 held-out shots "
        "(95% CI +0.020 to +0.200, cross-fitted; scratch when its mean is below 0)"
    )
    assert "reuse u0–u2 (3 units) frozen and u3 fine-tuned, and re-initialise u4" in sentence
    # paired differences 0.10, 0.11, 0.09: mean 0.100, t-interval 0.100 -/+ 4.303 * 0.01 / sqrt(3)
    assert sentence.endswith(
        "expected gain of the plan with 10 shots per class: over training from scratch +0.100 accuracy "
        "(95% CI +0.075 to +0.125 over 3 seeds, p = 0.01: a clear gain), over fine-tuning everything: not run."
    )


def test_verdict_when_nothing_is_reusable_or_no_transfer_ran():
    plan = fake_plan(["reinit", "reinit"], False, 0.4)
    sentence = verdict_sentence(plan, {"strategies": {}}, metric_style("accuracy"))
    assert sentence.startswith("Train the target from scratch: S-initialised training scored -0.100 accuracy")
    assert "no gain is estimated" in sentence
    three_seeds = fake_transfer([0.7, 0.8, 0.75], [0.75, 0.74, 0.76], None)
    overlap = verdict_sentence(fake_plan(["reuse-finetuned"], False, 0.4), three_seeds, metric_style("accuracy"))
    assert "no clear difference" in overlap and "p =" not in overlap
    assert plan_gain(fake_transfer([0.7, 0.8], [0.75, 0.74]), "finetune-all") is None


def test_compact_names_runs_of_consecutive_units():
    order = ["a", "b", "c", "d", "e", "f"]
    assert compact(["a", "b", "c", "e"], order) == "a–c (3 units), e"
    assert compact(["f", "a", "b"], order) == "a, b, f"
    assert compact([], order) == ""


def test_metric_units_decibels_and_fractions():
    assert metric_style("accuracy").units == "fraction"
    psnr = metric_style("psnr", [24.0, 31.5])
    assert psnr.units == "dB" and not psnr.bounded
    assert psnr.fmt(31.204) == "31.20 dB" and psnr.fmt(-1.5, True) == "-1.50 dB"
    lo, hi = psnr.limits([24.0], [31.5])
    assert 20 < lo < 24 and 31.5 < hi < 35  # the data's range, not [0, 1]
    assert MetricStyle("accuracy", "fraction").limits([0.2], [0.9]) == pytest.approx((0.144, 0.956))
    assert MetricStyle("accuracy", "fraction").limits([-0.5], [1.4]) == (0.0, 1.0)
    assert metric_style("mystery", [0.3, 0.9]).bounded and not metric_style("mystery", [3.0, 9.0]).bounded


def to_decibels(obj):
    """Result-file content with every metric value v mapped to 20 + 15 v dB and every difference d to 15 d."""
    value, diff = (lambda x: 20 + 15 * x), (lambda x: 15 * x)
    if isinstance(obj, list):
        return [to_decibels(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    rules = {"test_metric": value, "val_metric": value, "baseline": value, "network_value": value,
             "network_drop": diff, "mean_diff": diff}  # fmt: skip
    if "drop" in obj:  # a replacement row or a plan's unit
        rules |= {"value": value, "drop": diff, "ci": diff}
    elif "runs" in obj:  # a transfer strategy
        rules |= {"mean": value, "ci": value, "runs": value}
    elif "ci_over" in obj:  # a paired gain
        rules |= {"mean": diff, "ci": diff}
    out = {}
    for key, v in obj.items():
        f = rules.get(key)
        if f and isinstance(v, float):
            out[key] = f(v)
        elif f and isinstance(v, list) and all(isinstance(x, float) for x in v):
            out[key] = [f(x) for x in v]
        else:
            out[key] = to_decibels(v)
    return out


def to_psnr(study_dir: Path, folder: Path) -> Path:
    """The tiny study's result files, turned into a reconstruction study's (metric psnr, in dB)."""
    shutil.copytree(study_dir, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.png", "*.html"))
    for path in folder.rglob("*.json"):
        doc = to_decibels(json.loads(path.read_text()))
        for entry in (doc, *doc.get("models", {}).values()):
            entry.update({k: v for k, v in (("metric", "psnr"), ("units", "dB")) if k in entry})
        if "choice" in (doc.get("network") or {}):  # reconstruction's evidence is its own per-image PSNR
            doc["network"]["score"] = "correct"
        path.write_text(json.dumps(doc))
    return folder


def test_report_in_decibels(study_dir, tmp_path):
    run = to_psnr(study_dir, tmp_path / "psnr")
    path = render_report(run)
    html = path.read_text()
    accuracy = json.loads((study_dir / "results.json").read_text())["models"]["source"]["test_metric"]
    assert f"<td class='t'>psnr</td><td class='n'>{20 + 15 * accuracy:.2f} dB</td>" in html
    sentence = run_verdict(load_run(run))
    assert re.search(r"scored [+-]\d+\.\d\d dB psnr against fresh training", sentence)
    assert re.search(r"scratch [+-]\d+\.\d\d dB psnr \(2 seeds: not enough seeds \(2 < 3\)", sentence)
    sweep = json.loads((run / "replacement.json").read_text())
    assert sweep["baseline"] > 20  # the conversion reached the files the report reads


# --- how sure the verdicts are: seeds, bounds, oracles, warnings, undecided units ---------------------------------


def transfer_of(runs: dict[str, list[float]], p: dict[str, float | None]) -> dict:
    """A transfer file at 10 shots from each strategy's runs, with the p-values ``p`` keyed by comparison."""
    entry = lambda r: {"mean": sum(r) / len(r), "ci": [min(r), max(r)], "runs": r}  # noqa: E731
    significance = {key: {"p": value, "test": "paired t-test"} for key, value in p.items()}
    return {"headline_shots": 10, "strategies": {k: entry(v) for k, v in runs.items()}, "significance": significance}


def test_verdict_gives_the_gain_over_finetune_all_and_scratch():
    from scipy import stats

    runs = {"scratch": [0.70, 0.74, 0.69], "finetune-all": [0.80, 0.79, 0.84], "plan": [0.82, 0.81, 0.87]}
    p = {f"plan_vs_{k}": stats.ttest_rel(runs["plan"], runs[k]).pvalue for k in ("scratch", "finetune-all")}
    sentence = verdict_sentence(fake_plan(["reuse-frozen"], True, 0.0), transfer_of(runs, p), metric_style("accuracy"))
    for against, words in (("scratch", "training from scratch"), ("finetune-all", "fine-tuning everything")):
        diffs = np.subtract(runs["plan"], runs[against])
        lo, hi = stats.t.interval(0.95, 2, loc=diffs.mean(), scale=stats.sem(diffs))
        assert (f"over {words} {diffs.mean():+.3f} accuracy (95% CI {lo:+.3f} to {hi:+.3f} over 3 seeds, "
                f"p = {p['plan_vs_' + against]:.2g}") in sentence  # fmt: skip
    # against fine-tune-all: differences 0.02, 0.02, 0.03; t = 7 on 2 degrees of freedom
    assert sentence.endswith("+0.023 accuracy (95% CI +0.009 to +0.038 over 3 seeds, p = 0.02: a clear gain).")


def test_verdict_with_two_seeds_prints_no_ci_or_p_even_from_an_older_file():
    runs = {"scratch": [0.70, 0.74], "finetune-all": [0.80, 0.79], "plan": [0.82, 0.81]}
    transfer = transfer_of(runs, {"plan_vs_scratch": 0.04, "plan_vs_finetune-all": 0.2})  # p over 2 seeds
    sentence = verdict_sentence(fake_plan(["reuse-finetuned"], False, 0.3), transfer, metric_style("accuracy"))
    expected = "over training from scratch +0.095 accuracy (2 seeds: not enough seeds (2 < 3) for a CI or p-value)"
    assert expected in sentence
    assert "over fine-tuning everything +0.020 accuracy (2 seeds: not enough seeds" in sentence
    gains = sentence[sentence.index("expected gain"):]
    assert "95% CI" not in gains and "p =" not in gains
    gain = plan_gain(transfer, "scratch", metric_style("accuracy"))
    assert gain["ci"] is None and gain["p"] is None and gain["enough_seeds"] is False


def test_a_gain_near_the_bound_keeps_its_ci_inside_minus_one_to_one():
    from scipy import stats

    runs = {"scratch": [0.0, 0.1, 0.0], "plan": [1.0, 1.0, 0.9]}
    diffs = np.subtract(runs["plan"], runs["scratch"])
    raw = stats.t.interval(0.95, 2, loc=diffs.mean(), scale=stats.sem(diffs))
    gain = plan_gain(transfer_of(runs, {}), "scratch", metric_style("accuracy"))
    assert raw[1] > 1.0 and gain["ci"] == pytest.approx([raw[0], 1.0])
    assert plan_gain(transfer_of(runs, {}), "scratch", metric_style("psnr"))["ci"] == pytest.approx(list(raw))


SEED_RUNS = {
    "scratch": [0.70, 0.74, 0.69], "finetune-all": [0.80, 0.79, 0.84], "linear-probe": [0.60, 0.62, 0.58],
    "plan": [0.82, 0.81, 0.87], "best-depth": [0.97, 0.99, 0.96], "l2-sp": [0.79, 0.80, 0.78],
    "lp-ft": [0.81, 0.83, 0.80], "auto-rgn": [0.83, 0.82, 0.81],
}  # fmt: skip


def with_three_seeds(study_dir: Path, folder: Path) -> Path:
    """The tiny study's files with 3 seeds of every strategy (lp-ft and auto-rgn too), warnings and an undecided J2.

    The CIs are raw t-intervals, as files written before CIs were clipped hold them: best-depth's ends above 1.
    """
    from scipy import stats

    shutil.copytree(study_dir, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.png", "*.html"))
    results = json.loads((folder / "results.json").read_text())
    path = folder / results["transfer"]["file"]
    doc = json.loads(path.read_text())
    entry = lambda r: {"mean": float(np.mean(r)), "runs": r,  # noqa: E731
                       "ci": list(stats.t.interval(0.95, len(r) - 1, loc=np.mean(r), scale=stats.sem(r)))}  # fmt: skip
    doc["strategies"] = {name: entry(r) | {"by_shots": {str(n): entry(r) for n in doc["shots"]}}
                         for name, r in SEED_RUNS.items()}  # fmt: skip
    test = {"p": 0.0123, "test": "paired t-test over seeds", "mean_diff": 0.05, "enough_seeds": True}
    doc["significance"] = {key: test | {"by_shots": {str(n): test for n in doc["shots"]}}
                           for key in ("plan_vs_scratch", "plan_vs_finetune-all", "plan_vs_best-depth")}  # fmt: skip
    doc["seeds"] = 3
    path.write_text(json.dumps(doc))
    results["warnings"] = ["the validation set has 20 images: a 95% CI over them cannot resolve <0.02>"]
    (folder / "results.json").write_text(json.dumps(results))
    plan_path = folder / results["plan"]["file"]
    plan = json.loads(plan_path.read_text())
    for i, layer in enumerate(plan["layers"]):  # first undecided, last not judged, the others as in older files
        layer.pop("j2", None)
        if i in (0, len(plan["layers"]) - 1):
            layer["j2"] = "undecided" if i == 0 else None
    plan_path.write_text(json.dumps(plan))
    return folder


def test_report_with_three_seeds_new_strategies_warnings_and_undecided_units(study_dir, tmp_path):
    from scipy import stats

    run_dir = with_three_seeds(study_dir, tmp_path / "three")
    html = render_report(run_dir).read_text()
    run = load_run(run_dir)
    for name in ("lp-ft", "auto-rgn", "l2-sp"):  # any strategy name is rendered
        assert f"<td class='t'>{name}</td><td class='n'>{np.mean(SEED_RUNS[name]):.3f} [" in html
    best = SEED_RUNS["best-depth"]
    lo = stats.t.interval(0.95, 2, loc=np.mean(best), scale=stats.sem(best))[0]
    assert f"<td class='t'>best-depth (oracle)</td><td class='n'>{np.mean(best):.3f} [{lo:.3f} to 1.000]</td>" in html
    assert "<td class='t'>plan vs best-depth (oracle)</td><td class='n'>3</td>" in html and "0.0123" in html
    assert "Best strategy at 5 shots: plan (0.833)." in html  # the oracle is not a strategy a user can run
    assert "best-depth (oracle) at 5 shots: 0.973" in html
    assert ("<div class='warnings' id='warnings' role='note'><strong>Warnings</strong><ul><li>the validation set "
            "has 20 images: a 95% CI over them cannot resolve &lt;0.02&gt;</li></ul></div>") in html  # fmt: skip
    first, *others, last = run.plan["layers"]
    assert f"<td class='t'>{first['name']}</td>" in html and "<td class='undecided'>undecided</td>" in html
    assert f"J2 undecided for {first['name']}: the 95% CI of the drop straddles the tolerance" in html
    for layer in others:  # no j2 field: the verdict comes from reusable_by_replacement
        mark = "yes'>reusable" if layer["reusable_by_replacement"] else "no'>not reusable"
        assert f"<td class='t'>{layer['name']}</td>" in html and f"<td class='{mark}</td>" in html
    assert f"<td class='t'>{last['name']}</td><td class='t'>{last['kind']}</td>" in html
    assert "<td class='t'>–</td><td class='" + ("yes" if last["reusable_by_rmse"] else "no") in html  # J2 not judged
    assert "over fine-tuning everything +0.023 accuracy (95% CI" in run_verdict(run)


def test_no_warnings_no_box(study_dir):
    from dataclasses import replace

    from paramreuse.report.html import _warnings

    run = load_run(study_dir)
    assert _warnings(replace(run, results={k: v for k, v in run.results.items() if k != "warnings"})) == ""
    assert "<li>S is at chance</li>" in _warnings(replace(run, results=run.results | {"warnings": ["S is at chance"]}))


def test_report_renders_transfer_files_without_cis_below_three_seeds(study_dir, tmp_path):
    """A transfer file may hold ``ci: None`` where there are too few seeds (as seed_interval writes it)."""
    folder = tmp_path / "no-ci"
    shutil.copytree(study_dir, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.png", "*.html"))
    path = folder / "transfer" / "transfer.json"
    doc = json.loads(path.read_text())
    for entry in doc["strategies"].values():
        for b in (entry, *entry["by_shots"].values()):
            b["ci"] = None
    path.write_text(json.dumps(doc))
    html = render_report(folder).read_text()
    plan = doc["strategies"]["plan"]["by_shots"]["3"]["mean"]
    assert f"<td class='t'>plan</td><td class='n'>{plan:.3f} [not enough seeds (2 &lt; 3)]</td>" in html
    assert Image.open(folder / "transfer.png").size[0] > 100


def test_oracles_come_from_the_file_flag_or_the_name():
    from paramreuse.report.verdict import best_strategy, comparison_label

    assert strategy_label("best-depth") == "best-depth (oracle)" and strategy_label("lp-ft") == "lp-ft"
    assert strategy_label("best-lr", {"oracle": True}) == "best-lr (oracle)"
    transfer = transfer_of({"plan": [0.8], "best-lr": [0.9], "lp-ft": [0.85]}, {})
    transfer["strategies"]["best-lr"]["oracle"] = True
    assert best_strategy(transfer) == ("best-lr", 0.9) and best_strategy(transfer, oracles=False) == ("lp-ft", 0.85)
    assert comparison_label("plan_vs_best-lr", transfer["strategies"]) == "plan vs best-lr (oracle)"
