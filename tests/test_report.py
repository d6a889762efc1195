"""The HTML report: every section in headless Chromium, numbers from the result files, any metric's units."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from paramreuse.cli import app
from paramreuse.report import FIGURES, SECTIONS, MetricStyle, load_run, metric_style, render_report, run_verdict
from paramreuse.report.verdict import compact, plan_gain, verdict_sentence
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


def test_study_summary_ends_with_the_verdict(study_run):
    run, result = study_run
    text = " ".join(result.stdout.split())  # rich wraps long lines
    assert "Verdict: " + run_verdict(load_run(run)) in text
    assert text.endswith(f"results: {run / 'results.json'} report: {run / 'report.html'}")
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
    assert f"id='verdict-sentence'>{sentence.replace(chr(39), '&#x27;')}</p>" in html
    assert ("is reusable as a whole" in sentence) == run.plan["network_reusable"]
    for name in FIGURES:  # the PNG beside the report is the embedded one
        png = (study_dir / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert base64.b64encode(png).decode() in html
    for row in run.sweep["cumulative"]:
        assert f"<td class='n'>{row['value']:.3f}</td>" in html
    for name, entry in run.transfer["strategies"].items():
        assert f"<td class='t'>{name}</td><td class='n'>{entry['by_shots']['3']['mean']:.3f} [" in html
    assert f"<td class='n'>{run.plan['thresholds']['rmse_position']:.4f}</td>" in html
    assert run.results["environment"]["torch"] in html


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
    assert runner.invoke(app, ["report", str(study_dir), "--out", str(tmp_path), "--quiet"]).stdout == ""
    human = runner.invoke(app, ["report", str(study_dir), "--out", str(tmp_path)])
    assert "report:" in human.stdout and "reusable" in human.stdout
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
    return {"network_reusable": reusable, "network_drop": drop, "thresholds": thresholds, "layers": layers}


def fake_transfer(plan_runs: list[float], scratch_runs: list[float], p: float | None = 0.01) -> dict:
    entry = lambda runs: {"mean": sum(runs) / len(runs), "ci": [min(runs), max(runs)], "runs": runs}
    return {
        "headline_shots": 10,
        "strategies": {"scratch": entry(scratch_runs), "plan": entry(plan_runs)},
        "significance": {"plan_vs_scratch": {"p": p, "test": "paired t-test"}},
    }


def test_verdict_says_reusable_which_units_and_the_gain():
    plan = fake_plan(["reuse-frozen"] * 3 + ["reuse-finetuned", "reinit"], True, 0.01)
    sentence = verdict_sentence(plan, fake_transfer([0.80, 0.82, 0.84], [0.70, 0.71, 0.75]), metric_style("accuracy"))
    assert sentence.startswith(
        "The network is reusable as a whole (S's conv kernels in T: accuracy drop +0.010, tolerance 0.02)"
    )
    assert "reuse u0–u2 (3 units) frozen and u3 fine-tuned, and re-initialise u4" in sentence
    # paired differences 0.10, 0.11, 0.09: mean 0.100, t-interval 0.100 -/+ 4.303 * 0.01 / sqrt(3)
    assert (
        "with 10 shots per class: +0.100 accuracy (95% CI +0.075 to +0.125 over 3 seeds, p = 0.01: a clear gain)"
        in sentence
    )


def test_verdict_when_nothing_is_reusable_or_no_transfer_ran():
    plan = fake_plan(["reinit", "reinit"], False, 0.4)
    sentence = verdict_sentence(plan, {"strategies": {}}, metric_style("accuracy"))
    assert (
        "is not reusable as a whole" in sentence
        and "no unit passes J2 or J3, so train the target from scratch" in sentence
    )
    assert "no gain is estimated" in sentence
    overlap = verdict_sentence(plan, fake_transfer([0.7, 0.8], [0.75, 0.74], None), metric_style("accuracy"))
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
        path.write_text(json.dumps(doc))
    return folder


def test_report_in_decibels(study_dir, tmp_path):
    run = to_psnr(study_dir, tmp_path / "psnr")
    path = render_report(run)
    html = path.read_text()
    accuracy = json.loads((study_dir / "results.json").read_text())["models"]["source"]["test_metric"]
    assert f"<td class='t'>psnr</td><td class='n'>{20 + 15 * accuracy:.2f} dB</td>" in html
    sentence = run_verdict(load_run(run))
    assert re.search(r"psnr drop [+-]\d+\.\d\d dB", sentence) and re.search(r"[+-]\d+\.\d\d dB psnr \(95% CI", sentence)
    sweep = json.loads((run / "replacement.json").read_text())
    assert sweep["baseline"] > 20  # the conversion reached the files the report reads
