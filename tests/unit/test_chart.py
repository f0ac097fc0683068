"""The activity chart (giftcard.web.support.chart): well-formed SVG that is an image with
a title and a description, axis labels and a legend, one panel per currency, nothing
that runs or loads, and a plain statement when there is nothing to draw."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, timedelta

import pytest

from giftcard.web.support.chart import Panel, Series, activity_chart, major, nice_step

SVG = "{http://www.w3.org/2000/svg}"
DAYS = [date(2026, 11, 1) + timedelta(days=offset) for offset in range(30)]


def parse(markup: str) -> ET.Element:
    root = ET.fromstring(markup)
    assert root.tag == SVG + "svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return [element.text or "" for element in root.iter(SVG + "text")]


def panel(currency: str = "USD", exponent: int = 2, scale: int = 1) -> Panel:
    return Panel(
        currency,
        exponent,
        [
            Series("Issued", [scale * 2500 * (day % 3) for day in range(len(DAYS))]),
            Series("Redeemed", [scale * 1000 * (day % 2) for day in range(len(DAYS))]),
            Series("Adjusted", [-500 if day == 4 else 0 for day in range(len(DAYS))]),
        ],
    )


def assert_accessible_and_inert(root: ET.Element, markup: str) -> None:
    assert root.get("role") == "img"
    title_id, desc_id = (root.get("aria-labelledby") or "").split()
    title = root.find(SVG + "title")
    desc = root.find(SVG + "desc")
    assert title is not None
    assert title.get("id") == title_id
    assert title.text
    assert desc is not None
    assert desc.get("id") == desc_id
    assert desc.text
    for element in root.iter():
        assert element.tag.removeprefix(SVG) not in ("script", "image", "foreignObject", "style")
        assert "style" not in element.attrib
        assert not any(name.startswith("on") for name in element.attrib)
        assert not any("href" in name for name in element.attrib)
    assert "http://" not in markup.replace("http://www.w3.org/2000/svg", "")


def test_one_currency_has_its_lines_axes_and_legend() -> None:
    markup = activity_chart(
        DAYS, [panel()], title="Daily activity", description="Issued and redeemed per day."
    )
    root = parse(markup)
    assert_accessible_and_inert(root, markup)
    lines = root.findall(f".//{SVG}polyline")
    assert len(lines) == 3
    assert all(len((line.get("points") or "").split()) == len(DAYS) for line in lines)
    assert len({line.get("stroke") for line in lines}) == 3
    assert len({line.get("stroke-dasharray") for line in lines}) == 3
    words = texts(root)
    # The legend, the axis titles, the day labels from first to last, money in major units.
    assert {"Issued", "Redeemed", "Adjusted"} <= set(words)
    assert "Amount (USD)" in words
    assert "Day (UTC)" in words
    assert "11-01" in words
    assert "11-30" in words
    # 50.00 at most and -5.00 at least, on steps of 20.
    assert [word for word in words if word.lstrip("-").isdigit()] == ["-20", "0", "20", "40", "60"]
    assert root.find(f"{SVG}title").text == "Daily activity"  # type: ignore[union-attr]


def test_several_currencies_get_a_panel_each_on_their_own_scale() -> None:
    markup = activity_chart(
        DAYS,
        [panel("EUR"), panel("JPY", exponent=0, scale=100), panel("USD")],
        title="Daily activity",
        description="Three currencies.",
        id_prefix="report-chart",
    )
    root = parse(markup)
    assert_accessible_and_inert(root, markup)
    assert root.find(f"{SVG}title").get("id") == "report-chart-title"  # type: ignore[union-attr]
    words = texts(root)
    assert [word for word in words if word.startswith("Amount")] == [
        "Amount (EUR)",
        "Amount (JPY)",
        "Amount (USD)",
    ]
    assert "200,000" in words  # yen: no minor unit, thousands separated
    assert len(root.findall(f".//{SVG}polyline")) == 9
    # The legend names each series once; each keeps its colour in every panel.
    assert words.count("Issued") == 1
    strokes = [line.get("stroke") for line in root.findall(f".//{SVG}polyline")]
    assert strokes[0] == strokes[3] == strokes[6]
    view_box = (root.get("viewBox") or "").split()
    single = parse(activity_chart(DAYS, [panel()], title="t", description="d"))
    assert float(view_box[3]) > float((single.get("viewBox") or "").split()[3])


@pytest.mark.parametrize(
    "panels",
    [[], [Panel("USD", 2, [])]],
    ids=["no currency", "no series"],
)
def test_nothing_to_draw_says_so(panels: list[Panel]) -> None:
    markup = activity_chart(DAYS, panels, title="Daily activity", description="Nothing yet.")
    root = parse(markup)
    assert_accessible_and_inert(root, markup)
    assert root.findall(f".//{SVG}polyline") == []
    assert "No activity to show." in texts(root)


def test_one_day_and_all_zero_series_draw_without_dividing_by_zero() -> None:
    markup = activity_chart(
        DAYS[:1],
        [Panel("GBP", 2, [Series("Issued", [0]), Series("Spent", [0])])],
        title="Today",
        description="One day.",
    )
    root = parse(markup)
    assert len(root.findall(f".//{SVG}circle")) == 2
    assert "0" in texts(root)


def test_names_with_markup_are_escaped() -> None:
    markup = activity_chart(
        DAYS[:2],
        [Panel("USD", 2, [Series('<b>"Issued" & more</b>', [1, 2])])],
        title="<script>alert(1)</script>",
        description="a < b & c",
    )
    root = parse(markup)
    assert root.find(f"{SVG}title").text == "<script>alert(1)</script>"  # type: ignore[union-attr]
    assert root.find(f".//{SVG}script") is None
    assert '<b>"Issued" & more</b>' in texts(root)


def test_a_series_of_the_wrong_length_is_a_mistake() -> None:
    with pytest.raises(ValueError, match="3 values for 2 days"):
        activity_chart(
            DAYS[:2], [Panel("USD", 2, [Series("Issued", [1, 2, 3])])], title="t", description="d"
        )


@pytest.mark.parametrize(
    ("amount", "exponent", "text"),
    [
        (0, 2, "0"),
        (2500, 2, "25"),
        (123450, 2, "1,234.5"),
        (-500, 2, "-5"),
        (250000, 0, "250,000"),
        (1, 3, "0.001"),
    ],
)
def test_axis_amounts_are_exact_major_units(amount: int, exponent: int, text: str) -> None:
    assert major(amount, exponent) == text


@pytest.mark.parametrize(
    ("span", "step"),
    [(1, 1), (4, 1), (7, 2), (100, 50), (101, 50), (1000, 500), (9000, 5000)],
)
def test_steps_are_one_two_or_five_times_a_power_of_ten(span: int, step: int) -> None:
    assert nice_step(span) == step
