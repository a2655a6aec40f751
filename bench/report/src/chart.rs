//! `results.svg`: two bar charts of the ratios.
//!
//! Top: how many times better proxyfleet is than HAProxy + Squid on each comparable metric
//! (for "lower is better" metrics the ratio is inverted), with a line at 1× and each goal of
//! the issue marked. Bottom: each side (HAProxy + Squid, HAProxy + ATS when measured,
//! proxyfleet) as a share of the direct (unproxied) figure, grouped by metric; 1 = as good as
//! no proxy at all.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::metrics::Row;
use crate::results::Side;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 900;
const HAPROXY_SQUID: RGBColor = RGBColor(127, 127, 127);
const HAPROXY_ATS: RGBColor = RGBColor(255, 127, 14);
const PROXYFLEET: RGBColor = RGBColor(31, 119, 180);
const MET: RGBColor = RGBColor(44, 160, 44);
const NOT_MET: RGBColor = RGBColor(214, 39, 40);

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

fn anchored(size: u32, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", size).into_font()).pos(Pos::new(h, v))
}

type BarChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The frame both charts share: `n` bar slots, a y axis from 0 to `top`, and a line at 1.
fn bar_frame<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    n: usize,
    top: f64,
    y_format: &dyn Fn(&f64) -> String,
) -> DrawResult<BarChart<'a, DB>>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .margin_bottom(40)
        .x_label_area_size(10)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc(y_desc)
        .y_max_light_lines(1)
        .y_label_formatter(y_format)
        .draw()?;
    // 1 = equal (to the other side, or to no proxy at all).
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(-0.5, 1.0), (n as f64 - 0.5, 1.0)],
        BLACK.stroke_width(1),
    )))?;
    Ok(chart)
}

/// The SVG document for these rows.
pub fn render(rows: &[Row], title: &str) -> DrawResult<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 22))?;
        let (top, bottom) = root.split_vertically(HEIGHT / 2 - 20);
        advantage_chart(&root, &top, rows)?;
        direct_chart(&root, &bottom, rows)?;
        root.present()?;
    }
    Ok(svg)
}

/// Category labels under the x axis, drawn in pixels (the mesh's own labels would land
/// between integer positions).
fn category_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    labels: &[&str],
    y0: f64,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let style = anchored(13, HPos::Center, VPos::Top);
    let origin = root.get_base_pixel();
    for (i, label) in labels.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64, y0));
        root.draw(&Text::new(
            label.to_string(),
            (x - origin.0, y - origin.1 + 8),
            style.clone(),
        ))?;
    }
    Ok(())
}

fn advantage_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    rows: &[Row],
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let items: Vec<(&Row, f64)> = rows
        .iter()
        .filter_map(|r| r.advantage().map(|a| (r, a)))
        .collect();
    let n = items.len().max(1);
    // A huge advantage (idle memory, say) would flatten every other bar: the axis stops at
    // CAP and taller bars are cut there, their label still telling the real figure.
    const CAP: f64 = 10.0;
    let top = items
        .iter()
        .flat_map(|(r, a)| [*a, r.goal_advantage().unwrap_or(0.0)])
        .fold(3.5_f64, f64::max)
        .min(CAP)
        * 1.15;
    let mut chart = bar_frame(
        area,
        "proxyfleet vs HAProxy + Squid: times better (ratio, inverted where lower is better); \
         green: goal met, red: not met, blue: no goal",
        "× better",
        n,
        top,
        &|v| format!("{v:.1}×"),
    )?;
    for (i, (row, adv)) in items.iter().enumerate() {
        let x = i as f64;
        let color = match row.goal_met() {
            Some(true) => MET,
            Some(false) => NOT_MET,
            None => PROXYFLEET,
        };
        let shown = adv.min(CAP * 1.1);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x - 0.3, 0.0), (x + 0.3, shown)],
            color.filled(),
        )))?;
        // Inside the top of the bar when it is tall enough (clear of a goal mark just above).
        let inside = shown > top * 0.1;
        let (y, v, text_color) = if inside {
            (shown - top * 0.01, VPos::Top, WHITE)
        } else {
            (shown + top * 0.01, VPos::Bottom, BLACK)
        };
        chart.draw_series(std::iter::once(Text::new(
            format!("{adv:.2}×"),
            (x, y),
            anchored(13, HPos::Center, v).color(&text_color),
        )))?;
        if let Some(goal) = row.goal_advantage() {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x - 0.42, goal), (x + 0.42, goal)],
                BLACK.stroke_width(3),
            )))?;
            // Right of the bar and under the mark: clear of the value above the bar.
            chart.draw_series(std::iter::once(Text::new(
                format!("goal {goal:.0}×"),
                (x + 0.31, goal - top * 0.01),
                anchored(11, HPos::Left, VPos::Top),
            )))?;
        }
    }
    let labels: Vec<&str> = items.iter().map(|(r, _)| r.short).collect();
    category_labels(root, &chart, &labels, 0.0)?;
    Ok(())
}

fn direct_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    rows: &[Row],
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let items: Vec<(&Row, [Option<f64>; 3])> = rows
        .iter()
        .map(|r| {
            (
                r,
                [
                    r.closeness_to_direct(Side::HaproxySquid),
                    r.closeness_to_direct(Side::HaproxyAts),
                    r.closeness_to_direct(Side::Proxyfleet),
                ],
            )
        })
        .filter(|(_, v)| v.iter().any(Option::is_some))
        .collect();
    let n = items.len().max(1);
    let top = items
        .iter()
        .flat_map(|(_, v)| v.map(|x| x.unwrap_or(0.0)))
        .fold(1.0_f64, f64::max)
        * 1.15;
    let mut chart = bar_frame(
        area,
        "each side as a share of direct (no proxy); 1 = as good as no proxy",
        "share of direct",
        n,
        top,
        &|v| format!("{v:.1}"),
    )?;
    let mut bars = Vec::new();
    let mut values = Vec::new();
    for (i, (_, [h, a, p])) in items.iter().enumerate() {
        let x = i as f64;
        for (v, dx, color) in [
            (h, -0.26, HAPROXY_SQUID),
            (a, 0.0, HAPROXY_ATS),
            (p, 0.26, PROXYFLEET),
        ] {
            if let Some(v) = v {
                bars.push((x + dx, *v, color));
                values.push(Text::new(
                    format!("{v:.2}"),
                    (x + dx, *v + top * 0.01),
                    anchored(11, HPos::Center, VPos::Bottom),
                ));
            }
        }
    }
    for (color, name) in [
        (HAPROXY_SQUID, "HAProxy + Squid"),
        (HAPROXY_ATS, "HAProxy + ATS"),
        (PROXYFLEET, "proxyfleet"),
    ] {
        chart
            .draw_series(
                bars.iter()
                    .filter(|(_, _, c)| *c == color)
                    .map(|(x, v, c)| Rectangle::new([(x - 0.12, 0.0), (x + 0.12, *v)], c.filled())),
            )?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    chart.draw_series(values)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    let labels: Vec<&str> = items.iter().map(|(r, _)| r.short).collect();
    category_labels(root, &chart, &labels, 0.0)?;
    Ok(())
}
