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

/// Draws `series` as lines with a legend into `path` (.svg or .png).
pub fn line_chart(path: &Path, title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> Result<(), PlotError> {
    register_font()?;
    let draw_err = |e: String| PlotError::Draw { path: path.into(), detail: e };
    let size = (900, 560);
    if path.extension().is_some_and(|e| e == "png") {
        draw(BitMapBackend::new(path, size).into_drawing_area(), title, x_desc, y_desc, series).map_err(draw_err)
    } else {
        draw(SVGBackend::new(path, size).into_drawing_area(), title, x_desc, y_desc, series).map_err(draw_err)
    }
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let points = || series.iter().flat_map(|s| s.points.iter());
    let (x_max, y_min, y_max) = points().fold((0f64, f64::INFINITY, f64::NEG_INFINITY), |(x, lo, hi), &(px, py)| (x.max(px), lo.min(py), hi.max(py)));
    let (y_min, y_max) = if y_min.is_finite() { (y_min.min(0.0), y_max.max(y_min + 1e-6) * 1.05) } else { (0.0, 1.0) };
    root.fill(&WHITE).map_err(|e| err(&e))?;
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
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).position(SeriesLabelPosition::LowerRight).draw().map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
