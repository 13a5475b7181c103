"""The run report: ``ser_udfs.calls.report`` on hand-made tables, ``jobs/report_calls.py`` on
hand-made scoring outputs (Parquet and CSV), and the written page in headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs._cli import run
from jobs.report_calls import main, read_table
from ser_udfs.calls.plot import timeline_figure, timeline_file_name
from ser_udfs.calls.report import REPORT_COLUMNS, RunReport, build_report
from ser_udfs.calls.tables import probability_column, probability_columns
from tests.builders import SCORING_LABELS, ScoredCall, scoring_manifest, scoring_tables, write_scoring_output

CALLS = (
    ScoredCall("c-mid", "file:/calls/2026/mid.wav", 0.5, reasons=("overlap",), overlap_s=4.0,
               details={"overlap": "Both sides spoke at once for 4.0 s, over the 3.0 s threshold."}),
    ScoredCall("c-high", "file:/calls/2026/high call.wav", 0.9, reasons=("sustained_negative", "ended_negative"),
               details={"sustained_negative": "The customer was negative for 6.0 s in a row."}),
    ScoredCall("c-tie-b", "file:/calls/2026/tie-b.wav", 0.3, channels=((0, "unknown"),), labels=(("sad", "uncertain"),)),
    ScoredCall("c-tie-a", "file:/calls/2026/tie-a.wav", 0.3, channels=((0, "unknown"),), labels=(("happy", "neutral"),)),
    ScoredCall("c-low", "file:/calls/2026/low.wav", 0.1),
    ScoredCall("c-quiet", "file:/calls/2026/quiet.wav", 0.0, status="no_speech"),
)
ERRORS = (("file:/calls/2026/bad.wav", "decode"), ("file:/calls/2026/worse.wav", "decode"),
          ("file:/calls/2026/short.wav", "too_short"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Every tag's attributes, the headings' text and the page's text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.headings: list[str] = []
        self.text: list[str] = []
        self._heading: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._heading is not None:
            self._heading.append(data)

    def images(self) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.tags if tag == "img"]


def _report(calls=CALLS, errors=ERRORS, *, top: int = 3) -> RunReport:
    tables = scoring_tables(calls, errors)
    frames = {name: pd.DataFrame(tables[name], columns=_columns(name)) for name in REPORT_COLUMNS}
    return build_report(
        manifest=scoring_manifest(tables), source="/tables/call_emotions", finished_at="2026-11-30T08:15:00+00:00",
        calls=frames["calls"], channels=frames["channels"], errors=frames["errors"], segments=frames["segments"],
        top=top, probability_columns=probability_columns(SCORING_LABELS),
    )


def _columns(name: str) -> list[str]:
    """The columns the report reads from a table (so that empty frames have them too)."""
    return [*REPORT_COLUMNS[name], *(probability_columns(SCORING_LABELS) if name == "segments" else [])]


def test_report_shows_counts_order_reasons_and_roles() -> None:
    report = _report()
    page = _Page(report.html)
    text = " ".join(" ".join(page.text).split())
    for expected in ("Calls listed 9", "Calls scored 6", "Calls without speech 1", "Calls that could not be scored 3",
                     "Hours of audio 0.05 h (180 s)", "model-0123abcd (cnn)", "/archive/calls/2026/11/",
                     "2026-11-30T08:15:00+00:00", "decode 2", "too_short 1"):
        assert expected in text
    assert page.headings[:4] == ["Scoring run report", "The run", "Errors by kind", "Distributions"]
    # the top 3 by score, ties by call id; the fourth (c-tie-b) and the rest are left out
    calls = [heading for heading in page.headings if heading[:1].isdigit()]
    assert calls == ["1. Call c-high: escalation score 0.90", "2. Call c-mid: escalation score 0.50",
                     "3. Call c-tie-a: escalation score 0.30"]
    assert "c-tie-b" not in report.html and "c-low" not in report.html
    assert "The customer was negative for 6.0 s in a row." in text
    assert "ended negative in call c-high: 0.80 over 0.50." in text
    assert "Both sides spoke at once for 4.0 s, over the 3.0 s threshold." in text
    assert "No escalation reason fired." in text  # c-tie-a
    assert "one scored channel: no overlap, interruptions or reply gaps." in text
    # per role: c-high's customer (channel 1) ended angry, its agent did not
    assert "customer 1 45% 100% yes agent 0 55% 0% no" in text
    assert "unknown 0 100% 0% no" in text  # c-tie-a: happy then neutral


def test_report_is_offline_and_every_image_is_explained() -> None:
    report = _report()
    lowered = report.html.lower()
    assert "http://" not in lowered and "https://" not in lowered and "<script" not in lowered
    assert "<link" not in lowered and "@import" not in lowered and "url(" not in lowered
    images = _Page(report.html).images()
    sources = [attrs["src"] for attrs in images]
    assert sources == [f"images/{name}" for name in [
        "dominant-emotion-by-role.png", "talk-share-by-role.png", "overlap-share.png", "escalation-score.png",
        timeline_file_name("c-high", CALLS[1].path), timeline_file_name("c-mid", CALLS[0].path),
        timeline_file_name("c-tie-a", CALLS[3].path)]]
    assert sorted(f"images/{name}" for name in report.images) == sorted(sources)
    assert all(png.startswith(PNG_MAGIC) for png in report.images.values())
    assert all(attrs.get("alt") for attrs in images)
    assert report.html.count("<figure>") == report.html.count("<figcaption>") == len(images)
    assert "legend" in report.html  # every chart's colours are explained


def test_report_escapes_every_value_from_the_data() -> None:
    nasty = ScoredCall(
        "c-<i>&amp;", 'file:/calls/<script>alert("x")</script> $^_$.wav', 0.95, reasons=("overlap",),
        details={"overlap": "Both sides <b>shouted</b> & talked over each other."},
    )
    report = _report((nasty, *CALLS))
    assert "<script>" not in report.html and "<b>shouted</b>" not in report.html and "<i>" not in report.html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in report.html
    assert "Both sides &lt;b&gt;shouted&lt;/b&gt; &amp; talked over each other." in report.html
    assert "c-&lt;i&gt;&amp;amp;" in report.html
    name = timeline_file_name(nasty.call_id, nasty.path)
    assert re.fullmatch(r"[A-Za-z0-9._-]+\.png", name) and name in report.images


def test_report_without_two_channel_calls_says_there_is_no_overlap() -> None:
    report = _report(tuple(call for call in CALLS if len(call.channels) == 1))
    assert "No call has two scored channels, so there is no overlap to show." in report.html
    assert "overlap-share.png" not in report.images


def test_report_of_a_run_without_scored_calls_says_so() -> None:
    report = _report((), ERRORS)
    text = " ".join(" ".join(_Page(report.html).text).split())
    assert "Calls scored 0" in text and "decode 2" in text
    assert "No call was scored in this run, so there is nothing to chart." in text
    assert "No call was scored: there is no call to review." in text
    assert report.images == {}


def test_timeline_file_name_is_call_id_and_a_readable_stem() -> None:
    assert timeline_file_name("0123abcd", "file:/calls/2026/Kunde 17 (Rückruf).wav") == "0123abcd-Kunde_17_R_ckruf.png"
    assert timeline_file_name("0123abcd", "s3a://bucket/calls/call.v2.flac") == "0123abcd-call.v2.png"
    assert timeline_file_name("0123abcd", "/calls/" + "x" * 100 + ".wav") == "0123abcd-" + "x" * 60 + ".png"
    assert timeline_file_name("0123abcd", "/calls/%%%.wav") == "0123abcd.png"


def test_timeline_legend_is_below_the_title_and_names_every_colour() -> None:
    labels = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise", "calm"]
    rows = []
    for channel, role in ((0, "agent"), (1, "customer"), (-1, "unknown")):
        for start, end, speech, label in ((0, 3, False, None), (3, 9, True, "angry"), (9, 11, True, None),
                                          (11, 20, True, "uncertain"), (20, 40, True, "fear")):
            rows.append({"channel": channel, "role": role, "start_s": start, "end_s": end, "speech": speech,
                         "label": label, **{probability_column(name): 1 / 8 if label else None for name in labels}})
    title = "call 0123456789abcdef: file:/archive/" + "a-long-folder-name/" * 12 + "call.wav"
    figure = timeline_figure(pd.DataFrame(rows), labels, title=title,
                             probability_columns=[probability_column(name) for name in labels])
    from matplotlib import pyplot as plt

    try:
        renderer = figure.canvas.get_renderer()
        figure.canvas.draw()
        legend = figure.legends[0].get_window_extent(renderer)
        boxes = [figure._suptitle.get_window_extent(renderer)] + [axis.get_tightbbox(renderer) for axis in figure.axes]
        assert not any(legend.overlaps(box) for box in boxes)
        assert all(0 <= box.x0 and box.x1 <= figure.bbox.x1 and 0 <= box.y0 and box.y1 <= figure.bbox.y1
                   for box in [legend, *boxes])
        entries = [text.get_text() for text in figure.legends[0].get_texts()]
        assert entries == [*labels, "uncertain (under summary.min_confidence)", "speech, not scored", "no speech"]
        names = [axis.get_ylabel().split("\n")[0] for axis in figure.axes]
        assert names == ["agent (channel 0)", "customer (channel 1)", "mix of all channels"]
    finally:
        plt.close(figure)


# --- the job -------------------------------------------------------------------------------------


def _scoring_output(folder: Path, file_format: str, calls=CALLS, errors=ERRORS) -> Path:
    return write_scoring_output(folder, scoring_tables(calls, errors), file_format=file_format)


def _report_files(report: Path) -> list[str]:
    return sorted(str(path.relative_to(report)) for path in report.rglob("*") if path.is_file())


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_job_writes_a_self_contained_report(tmp_path: Path, file_format: str) -> None:
    scores = _scoring_output(tmp_path / "scores", file_format)
    report = tmp_path / "reports" / "2026-11"
    assert run(main, ["--scores", str(scores), "--output", str(report), "--top", "2", "--log-level", "WARNING"]) == 0
    page = (report / "index.html").read_text(encoding="utf-8")
    sources = [attrs["src"] for attrs in _Page(page).images()]
    assert _report_files(report) == sorted(["index.html", *sources])
    assert sources[-2:] == [f"images/{timeline_file_name('c-high', CALLS[1].path)}",
                            f"images/{timeline_file_name('c-mid', CALLS[0].path)}"]
    assert "Calls scored</th><td>6" in page and "<code>too_short</code>" in page
    assert [path.name for path in report.parent.iterdir()] == ["2026-11"]  # no staging folder left


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_job_reads_only_the_segments_of_the_calls_to_review(tmp_path: Path, file_format: str) -> None:
    scores = _scoring_output(tmp_path / "scores", file_format)
    columns = {**REPORT_COLUMNS["segments"], **dict.fromkeys(probability_columns(SCORING_LABELS), "double")}
    segments = read_table(scores, "segments", file_format, columns, call_ids=["c-high", "c-tie-a"])
    assert list(segments.columns) == list(columns)
    assert sorted(segments["call_id"].unique()) == ["c-high", "c-tie-a"] and len(segments) == 15
    assert segments["channel"].dtype == np.int32 and segments["speech"].dtype == bool
    calls = read_table(scores, "calls", file_format, REPORT_COLUMNS["calls"])
    assert len(calls) == len(CALLS) and calls["analytics_note"].isna().sum() == 4


def test_job_replaces_an_earlier_report(tmp_path: Path) -> None:
    scores = _scoring_output(tmp_path / "scores", "parquet")
    report = tmp_path / "report"
    assert run(main, ["--scores", str(scores), "--output", str(report), "--log-level", "WARNING"]) == 0
    assert len(list((report / "images").iterdir())) == 4 + 5  # charts, the calls with speech
    assert run(main, ["--scores", str(scores), "--output", str(report), "--top", "1", "--log-level", "WARNING"]) == 0
    assert len(list((report / "images").iterdir())) == 4 + 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report", "scores"]


def test_job_reports_a_run_without_scored_calls(tmp_path: Path) -> None:
    scores = _scoring_output(tmp_path / "scores", "csv", calls=())
    report = tmp_path / "report"
    assert run(main, ["--scores", str(scores), "--output", str(report), "--log-level", "WARNING"]) == 0
    page = (report / "index.html").read_text(encoding="utf-8")
    assert "No call was scored: there is no call to review." in page and "<img" not in page


def _refusal_cases(tmp_path: Path) -> dict[str, tuple[Path, Path | str, str]]:
    """name → (scores, report, what the one line says)."""
    good = _scoring_output(tmp_path / "good", "parquet")
    unfinished = _scoring_output(tmp_path / "unfinished", "parquet")
    (unfinished / "_SUCCESS").unlink()
    other_job = _scoring_output(tmp_path / "other-job", "parquet")
    (other_job / "_manifest.json").write_text(json.dumps({"job": "extract_features"}))
    old = _scoring_output(tmp_path / "old", "csv")
    for part in (old / "channels").glob("part-*"):  # an output of the scoring job before the analytics change
        frame = pd.read_csv(part).drop(columns=["role", "talk_share"])
        frame.to_csv(part, index=False)
    foreign = tmp_path / "holiday-photos"
    foreign.mkdir()
    (foreign / "index.html").write_text("<html><body>my photos</body></html>")
    report = tmp_path / "report"
    return {
        "missing": (tmp_path / "nowhere", report, "does not exist"),
        "unfinished": (unfinished, report, "is not a finished scoring output"),
        "other job": (other_job, report, "was written by extract_features, not jobs/score_calls.py"),
        "older scoring job": (old, report, "has no column role, talk_share"),
        "foreign report folder": (good, foreign, "holds files that are not a report of jobs/report_calls.py"),
        "remote": (good, "hdfs://namenode/reports", "reads and writes local folders only"),
    }


@pytest.mark.parametrize("case", ["missing", "unfinished", "other job", "older scoring job", "foreign report folder",
                                  "remote"])
def test_job_refuses_in_one_sentence_and_leaves_nothing(tmp_path: Path, capsys, case: str) -> None:
    scores, report, message = _refusal_cases(tmp_path)[case]
    before = sorted(path.name for path in tmp_path.iterdir())
    assert run(main, ["--scores", str(scores), "--output", str(report), "--log-level", "ERROR"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], errors
    assert sorted(path.name for path in tmp_path.iterdir()) == before
    if case == "foreign report folder":
        assert _report_files(report) == ["index.html"]


# --- the page in a browser -----------------------------------------------------------------------

#: Test-only: on load, list every image's ``src`` and ``naturalWidth`` in a marker element.
IMAGE_PROBE = """<script>
window.addEventListener("load", function () {
  var probe = document.createElement("pre");
  probe.id = "image-probe";
  probe.textContent = JSON.stringify(Array.prototype.map.call(document.images, function (image) {
    return {src: image.getAttribute("src"), width: image.naturalWidth};
  }));
  document.body.appendChild(probe);
});
</script>
"""


@pytest.mark.browser
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("neither chromium nor chromium-browser is on PATH: the report is not rendered")
    from PIL import Image

    scores = _scoring_output(tmp_path / "scores", "csv")
    report = tmp_path / "report"
    assert run(main, ["--scores", str(scores), "--output", str(report), "--top", "3", "--log-level", "WARNING"]) == 0
    chromium = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]

    screenshot = tmp_path / "page.png"
    subprocess.run([*chromium, f"--screenshot={screenshot}", "--window-size=1280,2000",
                    (report / "index.html").as_uri()], capture_output=True, timeout=60, check=True)
    assert screenshot.read_bytes().startswith(PNG_MAGIC)
    with Image.open(screenshot) as image:
        assert image.size == (1280, 2000)
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 16  # text, tables and charts, not one flat colour

    probed = tmp_path / "probed"
    shutil.copytree(report, probed)
    page = (probed / "index.html").read_text(encoding="utf-8")
    (probed / "index.html").write_text(page.replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")
    dumped = subprocess.run([*chromium, "--virtual-time-budget=5000", "--dump-dom", (probed / "index.html").as_uri()],
                            capture_output=True, timeout=60, check=True, text=True).stdout
    marker = re.search(r'<pre id="image-probe">(.*?)</pre>', dumped, re.S)
    assert marker, "the page's load handler did not run"
    loaded = json.loads(html.unescape(marker.group(1)))
    assert [image["src"] for image in loaded] == [attrs["src"] for attrs in _Page(page).images()]
    assert len(loaded) == 7 and all(image["width"] > 0 for image in loaded), loaded
    rendered = _Page(dumped)
    assert {"Scoring run report", "The run", "Errors by kind", "Distributions", "Calls to review"} <= set(rendered.headings)
    assert "1. Call c-high: escalation score 0.90" in rendered.headings
    assert "The customer was negative for 6.0 s in a row." in " ".join(rendered.text)
