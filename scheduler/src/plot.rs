//! Line charts for the reports (plotters): SVG or PNG by the file's extension. Text needs a
//! TrueType font; the DejaVu Sans of Debian's `fonts-dejavu-core` is used (`TESSERA_FONT`
//! names another file).
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{path}: cannot read the chart font ({error}); install fonts-dejavu-core or set TESSERA_FONT to a .ttf file")]
    Font { path: PathBuf, error: String },
    #[error("{path}: {detail}")]
    Draw { path: PathBuf, detail: String },
}

const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the font with plotters once per process.
fn register_font() -> Result<(), PlotError> {
    static DONE: OnceLock<Result<(), (PathBuf, String)>> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = PathBuf::from(std::env::var("TESSERA_FONT").unwrap_or_else(|_| DEFAULT_FONT.into()));
        let bytes = std::fs::read(&path).map_err(|e| (path.clone(), e.to_string()))?;
        // plotters keeps the font for the process's lifetime.
        plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
            .map_err(|_| (path, "not a TrueType font".to_string()))
    })
    .clone()
    .map_err(|(path, error)| PlotError::Font { path, error })
}

/// One named line of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart of a figure.
pub struct Panel<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub series: &'a [Series],
}

/// Draws `series` as lines with a legend into `path` (.svg or .png).
pub fn line_chart(path: &Path, title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> Result<(), PlotError> {
    line_panels(path, &[Panel { title, x_desc, y_desc, series }])
}

/// Draws several line charts stacked vertically into `path` (.svg or .png).
pub fn line_panels(path: &Path, panels: &[Panel]) -> Result<(), PlotError> {
    register_font()?;
    let draw_err = |e: String| PlotError::Draw { path: path.into(), detail: e };
    let size = (900, 480 * panels.len().max(1) as u32);
    if path.extension().is_some_and(|e| e == "png") {
        panels_on(BitMapBackend::new(path, size).into_drawing_area(), panels).map_err(draw_err)
    } else {
        panels_on(SVGBackend::new(path, size).into_drawing_area(), panels).map_err(draw_err)
    }
}

fn panels_on<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, panels: &[Panel]) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    // One legend column width for every panel, so their plots line up.
    let names = panels.iter().flat_map(|p| p.series.iter().map(|s| s.name.as_str()));
    let legend_width = names.map(|n| text_width(&root, n, &LEGEND_FONT.into())).max().unwrap_or(0) + 56;
    for (area, p) in root.split_evenly((panels.len().max(1), 1)).into_iter().zip(panels) {
        draw(area, p, legend_width)?;
    }
    root.present().map_err(|e| e.to_string())
}

/// Pixel width of `text` in `font` (a fallback of 8 px per character if it cannot be measured).
fn text_width<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, text: &str, font: &TextStyle) -> i32 {
    area.estimate_text_size(text, font).map_or(8 * text.chars().count() as i32, |(w, _)| w as i32)
}

const LEGEND_FONT: (&str, u32) = ("sans-serif", 15);

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, panel: &Panel, legend_width: i32) -> Result<(), String> {
    let Panel { title, x_desc, y_desc, series } = *panel;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let points = || series.iter().flat_map(|s| s.points.iter());
    let (x_min, x_max, y_min, y_max) = points().fold((f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY), |(xl, xh, lo, hi), &(px, py)| {
        (xl.min(px), xh.max(px), lo.min(py), hi.max(py))
    });
    // The x axis spans the data (curves start where they were measured, at t = 0 or epoch 1).
    let (x_min, x_max) = if x_min.is_finite() { (x_min, x_max.max(x_min + 1e-9)) } else { (0.0, 1.0) };
    let (y_min, y_max) = if y_min.is_finite() { (y_min.min(0.0), y_max.max(y_min + 1e-6) * 1.05) } else { (0.0, 1.0) };
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| err(&e))?;
    // The legend gets its own column right of the plot: it never covers data.
    let font: TextStyle = LEGEND_FONT.into();
    let (plot, legend) = root.split_horizontally(root.dim_in_pixel().0 as i32 - legend_width);
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x_min..x_max + (x_max - x_min) * 0.02, y_min..y_max)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(|e| err(&e))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart.draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2))).map_err(|e| err(&e))?;
        let y = 24 + 24 * i as i32;
        legend.draw(&PathElement::new(vec![(8, y), (36, y)], color.stroke_width(3))).map_err(|e| err(&e))?;
        legend.draw(&Text::new(s.name.clone(), (44, y - 8), font.clone())).map_err(|e| err(&e))?;
    }
    Ok(())
}

/// Draws a square matrix as a heatmap with its values printed, rows and columns labelled
/// `labels` (whole: the margins are sized to the longest label), and a colour bar: the
/// colour scale (viridis) spans the values' own range, not a fixed one.
pub fn heatmap(path: &Path, title: &str, labels: &[String], matrix: &[Vec<f32>]) -> Result<(), PlotError> {
    register_font()?;
    let draw_err = |e: String| PlotError::Draw { path: path.into(), detail: e };
    // Label widths need a backend to measure with; a scratch one does.
    let longest = {
        let mut scratch = String::new();
        let area = SVGBackend::with_string(&mut scratch, (10, 10)).into_drawing_area();
        let font: TextStyle = ("sans-serif", LABEL_PX).into();
        labels.iter().map(|l| text_width(&area, l, &font)).max().unwrap_or(0)
    };
    let n = labels.len() as u32;
    let layout = HeatLayout { left: longest + 20, top: 50, cell: 70, bottom: longest + 20, bar: 110 };
    let size = (layout.left as u32 + layout.cell as u32 * n + layout.bar as u32 + 10, layout.top as u32 + layout.cell as u32 * n + layout.bottom as u32);
    if path.extension().is_some_and(|e| e == "png") {
        draw_heatmap(BitMapBackend::new(path, size).into_drawing_area(), title, labels, matrix, &layout).map_err(draw_err)
    } else {
        draw_heatmap(SVGBackend::new(path, size).into_drawing_area(), title, labels, matrix, &layout).map_err(draw_err)
    }
}

const LABEL_PX: u32 = 14;

/// Pixel margins of a heatmap: row labels left, column labels (turned) below, colour bar right.
struct HeatLayout {
    left: i32,
    top: i32,
    cell: i32,
    bottom: i32,
    bar: i32,
}

fn draw_heatmap<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    labels: &[String],
    m: &[Vec<f32>],
    l: &HeatLayout,
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let n = labels.len() as i32;
    let (lo, hi) = m.iter().flatten().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (lo.min(0.0) - 0.5, lo.max(0.0) + 0.5) };
    let colour = |v: f32| ViridisRGB::get_color_normalized(v.clamp(lo, hi), lo, hi);
    let font: TextStyle = ("sans-serif", LABEL_PX).into();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    root.draw(&Text::new(title.to_string(), (10, 12), ("sans-serif", 20))).map_err(|e| err(&e))?;
    for (i, row) in m.iter().enumerate() {
        let y0 = l.top + l.cell * i as i32;
        root.draw(&Text::new(labels[i].clone(), (8, y0 + l.cell / 2 - LABEL_PX as i32 / 2), font.clone())).map_err(|e| err(&e))?;
        for (j, &v) in row.iter().enumerate() {
            let x0 = l.left + l.cell * j as i32;
            root.draw(&Rectangle::new([(x0, y0), (x0 + l.cell, y0 + l.cell)], colour(v).filled())).map_err(|e| err(&e))?;
            root.draw(&Rectangle::new([(x0, y0), (x0 + l.cell, y0 + l.cell)], WHITE.stroke_width(1))).map_err(|e| err(&e))?;
            // Dark cells (the low half of viridis) get white digits.
            let ink = if (v - lo) / (hi - lo) < 0.5 { WHITE } else { BLACK };
            root.draw(&Text::new(format!("{v:.2}"), (x0 + l.cell / 2 - 15, y0 + l.cell / 2 - 7), font.clone().color(&ink))).map_err(|e| err(&e))?;
        }
    }
    // Column labels turned a quarter, reading down from under their column.
    let turned = font.clone().transform(FontTransform::Rotate90);
    for (j, label) in labels.iter().enumerate() {
        let x = l.left + l.cell * j as i32 + l.cell / 2 + LABEL_PX as i32 / 2;
        root.draw(&Text::new(label.clone(), (x, l.top + l.cell * n + 8), turned.clone())).map_err(|e| err(&e))?;
    }
    // The colour bar: the scale from the smallest value (bottom) to the largest (top).
    let (bx, by, bh) = (l.left + l.cell * n + 20, l.top, (l.cell * n).max(100));
    let steps = 100;
    for k in 0..steps {
        let v = lo + (hi - lo) * (k as f32 + 0.5) / steps as f32;
        let y1 = by + bh - bh * k / steps;
        let y0 = by + bh - bh * (k + 1) / steps;
        root.draw(&Rectangle::new([(bx, y0), (bx + 22, y1)], colour(v).filled())).map_err(|e| err(&e))?;
    }
    root.draw(&Rectangle::new([(bx, by), (bx + 22, by + bh)], BLACK.stroke_width(1))).map_err(|e| err(&e))?;
    for t in 0..=4 {
        let v = lo + (hi - lo) * t as f32 / 4.0;
        let y = by + bh - bh * t / 4;
        root.draw(&PathElement::new(vec![(bx + 22, y), (bx + 27, y)], BLACK.stroke_width(1))).map_err(|e| err(&e))?;
        root.draw(&Text::new(format!("{v:.2}"), (bx + 30, y - 7), font.clone())).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}
