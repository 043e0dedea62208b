//! Renders sample charts with synthetic data, to eyeball the output:
//! `cargo run -p ramba-report --example sample -- /tmp/ramba-report-sample`

use std::path::PathBuf;

use anyhow::Result;
use ramba_report::{heatmap, line_chart, Series};

fn main() -> Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "/tmp/ramba-report-sample".into()),
    );

    // Loss curves: a noisy train loss every 10 steps, a val loss every 250 steps.
    let loss = |step: f64| 2.2 + 8.5 * (-step / 600.0).exp() + 0.4 * (-step / 5000.0).exp();
    let train = (0..=500)
        .map(|i| {
            let step = i as f64 * 10.0;
            let noise = 0.06 * ((step * 0.37).sin() + (step * 0.051).cos());
            (step, loss(step) + noise)
        })
        .collect();
    let val = (0..=20)
        .map(|i| {
            let step = i as f64 * 250.0;
            (step, loss(step) + 0.08)
        })
        .collect();
    let series = vec![
        Series::new("train loss", train),
        Series::new("val loss", val),
    ];
    let path = dir.join("loss.png");
    line_chart(&path, "Training loss", "step", "loss", &series, true)?;
    println!("{}", path.display());

    // Perplexity by evaluation length for two models.
    let lengths = [512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0];
    let ppl = |grow: f64| -> Vec<(f64, f64)> {
        lengths
            .iter()
            .map(|&l: &f64| {
                (
                    l,
                    14.0 - (l.log2() - 9.0) * 0.6 + grow * (l / 4096.0).max(1.0).ln(),
                )
            })
            .collect()
    };
    let series = vec![
        Series::new("ramba", ppl(0.3)),
        Series::new("transformer", ppl(9.0)),
    ];
    let path = dir.join("ppl_by_length.png");
    line_chart(
        &path,
        "Perplexity by length",
        "context length (tokens)",
        "perplexity",
        &series,
        false,
    )?;
    println!("{}", path.display());

    // Passkey accuracy: degrades with length and, a little, with depth; one cell not run.
    let x: Vec<String> = ["1k", "2k", "4k", "8k", "16k", "32k"]
        .map(String::from)
        .to_vec();
    let y: Vec<String> = ["0%", "25%", "50%", "75%", "100%"]
        .map(String::from)
        .to_vec();
    let values: Vec<Vec<Option<f64>>> = (0..y.len())
        .map(|r| {
            (0..x.len())
                .map(|c| {
                    if (r, c) == (4, 5) {
                        None
                    } else {
                        let v = 1.0 - 0.17 * c as f64 * (0.7 + 0.1 * r as f64);
                        Some((v * 10.0).round().clamp(0.0, 10.0) / 10.0)
                    }
                })
                .collect()
        })
        .collect();
    let path = dir.join("passkey.png");
    heatmap(
        &path,
        "Passkey retrieval accuracy",
        "context length",
        "passkey depth",
        &x,
        &y,
        &values,
    )?;
    println!("{}", path.display());
    Ok(())
}
