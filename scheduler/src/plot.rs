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
    for (area, p) in root.split_evenly((panels.len().max(1), 1)).into_iter().zip(panels) {
        draw(area, p.title, p.x_desc, p.y_desc, p.series)?;
    }
    root.present().map_err(|e| e.to_string())
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let points = || series.iter().flat_map(|s| s.points.iter());
    let (x_max, y_min, y_max) = points().fold((0f64, f64::INFINITY, f64::NEG_INFINITY), |(x, lo, hi), &(px, py)| (x.max(px), lo.min(py), hi.max(py)));
    let (y_min, y_max) = if y_min.is_finite() { (y_min.min(0.0), y_max.max(y_min + 1e-6) * 1.05) } else { (0.0, 1.0) };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max.max(1e-9) * 1.02, y_min..y_max)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(|e| err(&e))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| err(&e))?;
    Ok(())
}

/// Draws a square matrix (values in [-1, 1]) as a heatmap with its values printed, rows and
/// columns labelled `labels`, into `path` (.svg or .png).
pub fn heatmap(path: &Path, title: &str, labels: &[String], matrix: &[Vec<f32>]) -> Result<(), PlotError> {
    register_font()?;
    let draw_err = |e: String| PlotError::Draw { path: path.into(), detail: e };
    let size = (220 + 110 * labels.len() as u32, 120 + 70 * labels.len() as u32);
    if path.extension().is_some_and(|e| e == "png") {
        draw_heatmap(BitMapBackend::new(path, size).into_drawing_area(), title, labels, matrix).map_err(draw_err)
    } else {
        draw_heatmap(SVGBackend::new(path, size).into_drawing_area(), title, labels, matrix).map_err(draw_err)
    }
}

fn draw_heatmap<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, title: &str, labels: &[String], m: &[Vec<f32>]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let n = labels.len();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(|e| err(&e))?;
    let (w, h) = root.dim_in_pixel();
    let (left, top) = (200i32, 10i32);
    let cell = (((w as i32 - left - 10) / n.max(1) as i32).min((h as i32 - top - 40) / n.max(1) as i32)).max(10);
    for (i, row) in m.iter().enumerate() {
        root.draw(&Text::new(labels[i].clone(), (8, top + cell * i as i32 + cell / 2 - 7), ("sans-serif", 13))).map_err(|e| err(&e))?;
        for (j, &v) in row.iter().enumerate() {
            // Blue (−1) through white (0) to red (+1).
            let t = v.clamp(-1.0, 1.0);
            let color = if t >= 0.0 {
                RGBColor(255, (255.0 * (1.0 - t)) as u8, (255.0 * (1.0 - t)) as u8)
            } else {
                RGBColor((255.0 * (1.0 + t)) as u8, (255.0 * (1.0 + t)) as u8, 255)
            };
            let (x0, y0) = (left + cell * j as i32, top + cell * i as i32);
            root.draw(&Rectangle::new([(x0, y0), (x0 + cell, y0 + cell)], color.filled())).map_err(|e| err(&e))?;
            root.draw(&Rectangle::new([(x0, y0), (x0 + cell, y0 + cell)], BLACK.stroke_width(1))).map_err(|e| err(&e))?;
            root.draw(&Text::new(format!("{v:.2}"), (x0 + cell / 2 - 14, y0 + cell / 2 - 7), ("sans-serif", 13))).map_err(|e| err(&e))?;
        }
    }
    for (j, label) in labels.iter().enumerate() {
        let short: String = label.chars().take(14).collect();
        root.draw(&Text::new(short, (left + cell * j as i32 + 2, top + cell * n as i32 + 6), ("sans-serif", 11))).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}
