//! The demo's report: one self-contained HTML page (inline SVG, no script,
//! no external resource) with the lineage graph of the first trace (output
//! → sources → events → policy → authorities), the loss and throughput
//! plots, the refusals by reason, the traces, the predicates, the restarted
//! node's catch-up and the revocation audit.

use std::fmt::Write;

use provenance::api::TraceAnswer;
use provenance::Digest;

use crate::demo::{CatchUp, DemoSource, Sample};

/// Everything the report shows.
#[derive(Debug, Clone)]
pub struct ReportData {
    /// The fine-tuning campaign.
    pub campaign: Digest,
    /// The base model's campaign.
    pub base_campaign: Digest,
    /// The policy.
    pub policy: Digest,
    /// Governance authority.
    pub policy_authority: String,
    /// Operator authority.
    pub operator: String,
    /// (node, log size, root) at the end of the campaign.
    pub nodes: Vec<(String, u64, String)>,
    /// The sources and their admission.
    pub sources: Vec<DemoSource>,
    /// (source title, reason, examples) refused.
    pub refusals: Vec<(String, String, u64)>,
    /// Progress samples of the fine-tune.
    pub samples: Vec<Sample>,
    /// (seconds, finality latency) per committed entry.
    pub latencies: Vec<(f64, f64)>,
    /// (label, answer) per trace.
    pub traces: Vec<(String, TraceAnswer)>,
    /// (predicate, pass).
    pub predicates: Vec<(String, bool)>,
    /// The killed node's catch-up.
    pub catch_up: CatchUp,
    /// The revocation audit, rendered.
    pub audit: String,
    /// Steps committed, attempted, rolled back.
    pub steps: (u64, u64, u64),
}

/// HTML-escapes `s`.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' => o.push('·'),
            c => o.push(c),
        }
    }
    o
}

fn short(s: &str, n: usize) -> String {
    let s: String = s.chars().map(|c| if c.is_control() { '·' } else { c }).collect();
    if s.chars().count() <= n {
        s
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// One plotted series: label, colour, points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A line plot of `series` (each (label, colour, points)) as inline SVG;
/// a colour written `.#rrggbb` draws that series as dots.
fn plot(title: &str, xlabel: &str, ylabel: &str, series: &[Series<'_>], dots: bool) -> String {
    let (w, h, l, r, t, b) = (560.0, 260.0, 56.0, 16.0, 28.0, 40.0);
    let pts = series
        .iter()
        .flat_map(|s| s.2.iter())
        .filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    y0 = y0.min(0.0);
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    let sx = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - r);
    let sy = |y: f64| h - b - (y - y0) / (y1 - y0) * (h - t - b);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><rect width="{w}" height="{h}" fill="#fff"/><text x="{l}" y="18" font-size="13" font-weight="bold">{}</text>"##,
        esc(title)
    );
    for k in 0..=4 {
        let y = y0 + (y1 - y0) * f64::from(k) / 4.0;
        let (xr, yy, xt, yt, label) = (w - r, sy(y), l - 4.0, sy(y) + 3.0, fmt_num(y));
        let _ = write!(
            s,
            r##"<line x1="{l}" x2="{xr}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e3e3e3"/><text x="{xt}" y="{yt:.1}" font-size="10" text-anchor="end">{label}</text>"##
        );
        let x = x0 + (x1 - x0) * f64::from(k) / 4.0;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{}</text>"##,
            sx(x),
            h - b + 14.0,
            fmt_num(x)
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{l}" x2="{l}" y1="{t}" y2="{0}" stroke="#333"/><line x1="{l}" x2="{1}" y1="{0}" y2="{0}" stroke="#333"/><text x="{2}" y="{3}" font-size="11" text-anchor="middle">{4}</text><text x="12" y="{5}" font-size="11" transform="rotate(-90 12 {5})" text-anchor="middle">{6}</text>"##,
        h - b,
        w - r,
        (l + w - r) / 2.0,
        h - 6.0,
        esc(xlabel),
        (t + h - b) / 2.0,
        esc(ylabel)
    );
    for (k, (label, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let (colour, dots) = match colour.strip_prefix('.') {
            Some(c) => (c, true),
            None => (*colour, dots),
        };
        if dots {
            for p in &path {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = write!(s, r##"<circle cx="{x}" cy="{y}" r="2" fill="{colour}"/>"##);
            }
        } else if !path.is_empty() {
            let _ = write!(
                s,
                r##"<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{}"/>"##,
                path.join(" ")
            );
        }
        let _ = write!(
            s,
            r##"<rect x="{}" y="{}" width="10" height="10" fill="{colour}"/><text x="{}" y="{}" font-size="11">{}</text>"##,
            w - r - 170.0,
            t + 4.0 + 14.0 * k as f64,
            w - r - 156.0,
            t + 13.0 + 14.0 * k as f64,
            esc(label)
        );
    }
    s.push_str("</svg>");
    s
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The lineage graph of one answer: output → sources → events → policy →
/// authorities, as columns of boxes joined by edges.
fn lineage(label: &str, a: &TraceAnswer, policy_authority: &str, operator: &str) -> String {
    let sources: Vec<_> = a.sources.iter().take(3).collect();
    let mut events: Vec<_> = a.events.iter().collect();
    events.sort_by(|x, y| y.score.total_cmp(&x.score));
    events.truncate(4);
    let mut authorities: Vec<String> = sources.iter().map(|s| s.authority.clone()).collect();
    authorities.push(policy_authority.to_string());
    authorities.push(operator.to_string());
    authorities.sort();
    authorities.dedup();
    let (w, bw, bh) = (1100.0, 190.0, 46.0);
    let cols = [20.0, 245.0, 470.0, 695.0, 900.0];
    let rows = sources.len().max(events.len()).max(authorities.len()).max(1);
    let h = 60.0 + rows as f64 * 64.0;
    let y_of = |i: usize, n: usize| 40.0 + (h - 40.0 - 20.0) * (i as f64 + 0.5) / n as f64 - bh / 2.0;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><rect width="{w}" height="{h}" fill="#fff"/>"##
    );
    for (k, head) in [
        "output",
        "sources (ranked)",
        "events (by score)",
        "policy",
        "authorities",
    ]
    .iter()
    .enumerate()
    {
        let _ = write!(
            s,
            r##"<text x="{}" y="22" font-size="12" font-weight="bold" fill="#444">{head}</text>"##,
            cols[k]
        );
    }
    let mut edges = String::new();
    let mut boxes = String::new();
    let mut node = |x: f64, y: f64, fill: &str, l1: &str, l2: &str| {
        let _ = write!(
            boxes,
            r##"<rect x="{x}" y="{y:.1}" width="{bw}" height="{bh}" rx="6" fill="{fill}" stroke="#555"/><text x="{:.1}" y="{:.1}" font-size="11" font-weight="bold">{}</text><text x="{:.1}" y="{:.1}" font-size="10" fill="#333">{}</text>"##,
            x + 6.0,
            y + 18.0,
            esc(&short(l1, 30)),
            x + 6.0,
            y + 35.0,
            esc(&short(l2, 34))
        );
    };
    let edge = |edges: &mut String, x1: f64, y1: f64, x2: f64, y2: f64, width: f64| {
        let _ = write!(
            edges,
            r##"<path d="M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}" fill="none" stroke="#7a8fb3" stroke-width="{width:.1}" opacity="0.8"/>"##,
            (x1 + x2) / 2.0,
            (x1 + x2) / 2.0
        );
    };
    let oy = y_of(0, 1);
    node(
        cols[0],
        oy,
        "#ffe9b3",
        &format!("\u{201c}{}\u{201d}", a.output),
        label,
    );
    let pol_y = y_of(0, 1);
    let policy_label = a.policies.first().map(|p| p.digest.short()).unwrap_or_default();
    node(
        cols[3],
        pol_y,
        "#e4d7f5",
        &format!("policy {policy_label}"),
        &format!("signed by {policy_authority}"),
    );
    let auth_y = |name: &str| {
        let i = authorities.iter().position(|x| x == name).unwrap_or(0);
        y_of(i, authorities.len())
    };
    for (i, au) in authorities.iter().enumerate() {
        let role = if au == policy_authority {
            "governance"
        } else if au == operator {
            "operator"
        } else {
            "data source"
        };
        node(cols[4], y_of(i, authorities.len()), "#dff0d8", au, role);
    }
    let max_salient = sources.iter().map(|s| s.salient.abs()).fold(1e-12, f64::max);
    for (i, src) in sources.iter().enumerate() {
        let y = y_of(i, sources.len());
        node(
            cols[1],
            y,
            "#d6e6fb",
            &format!("{}. {}", src.rank, src.title),
            &format!("salient {:.2e} · {}", src.salient, src.source.short()),
        );
        edge(
            &mut edges,
            cols[0] + bw,
            oy + bh / 2.0,
            cols[1],
            y + bh / 2.0,
            1.0 + 5.0 * (src.salient.abs() / max_salient),
        );
        let ay = auth_y(&src.authority);
        let _ = write!(
            edges,
            r##"<path d="M{:.1},{:.1} L{:.1},{:.1}" stroke="#b9d3a8" stroke-dasharray="4 3" fill="none"/>"##,
            cols[1] + bw,
            y + bh - 6.0,
            cols[4],
            ay + bh / 2.0
        );
        for (j, e) in events.iter().enumerate() {
            if src.top_examples.iter().any(|x| x.event_seq == e.seq) {
                edge(
                    &mut edges,
                    cols[1] + bw,
                    y + bh / 2.0,
                    cols[2],
                    y_of(j, events.len()) + bh / 2.0,
                    1.2,
                );
            }
        }
    }
    for (j, e) in events.iter().enumerate() {
        let y = y_of(j, events.len());
        node(
            cols[2],
            y,
            "#fbe0d6",
            &format!("event #{} (log {})", e.seq, e.entry.index),
            &format!("{} examples · score {:.3}", e.examples, e.score),
        );
        edge(
            &mut edges,
            cols[2] + bw,
            y + bh / 2.0,
            cols[3],
            pol_y + bh / 2.0,
            1.2,
        );
    }
    edge(
        &mut edges,
        cols[3] + bw,
        pol_y + bh / 2.0,
        cols[4],
        auth_y(policy_authority) + bh / 2.0,
        1.2,
    );
    s.push_str(&edges);
    s.push_str(&boxes);
    s.push_str("</svg>");
    s
}

/// Renders the report.
pub fn render(d: &ReportData) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r##"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>govtune demo report</title><style>
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;background:#fafafa;max-width:1160px}}
h1{{font-size:24px;margin:0 0 4px}} h2{{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}}
table{{border-collapse:collapse;font-size:13px;background:#fff}} td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}}
th{{background:#f0f0f0}} code,pre{{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}} pre{{background:#fff;border:1px solid #ddd;padding:8px;overflow-x:auto}}
.pass{{color:#17692a;font-weight:bold}} .fail{{color:#b00020;font-weight:bold}} .plots{{display:flex;flex-wrap:wrap;gap:12px}} svg{{border:1px solid #ddd;background:#fff}}
.kpi{{display:inline-block;background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 14px;margin:4px 8px 4px 0}} .kpi b{{display:block;font-size:20px}}
</style></head><body>
<h1>govtune: a governed fine-tuning campaign, traced and verified</h1>
<p>Campaign <code>{}</code> on base campaign <code>{}</code> under policy <code>{}</code>. Every figure below was read from the ledger by a light client holding only the genesis file, or measured by the demo while it ran.</p>
"##,
        d.campaign, d.base_campaign, d.policy
    );
    let passed = d.predicates.iter().filter(|p| p.1).count();
    let refused: u64 = d.refusals.iter().map(|r| r.2).sum();
    let _ = write!(
        h,
        r##"<div><span class="kpi"><b>{}</b>steps committed</span><span class="kpi"><b>{}</b>attempted</span><span class="kpi"><b>{}</b>rolled back</span><span class="kpi"><b>{refused}</b>examples refused</span><span class="kpi"><b>{passed}/{}</b>predicates pass</span><span class="kpi"><b>{}</b>nodes, equal roots</span></div>"##,
        d.steps.0,
        d.steps.1,
        d.steps.2,
        d.predicates.len(),
        d.nodes.len()
    );
    if let Some((label, a)) = d.traces.first() {
        let _ = write!(
            h,
            "<h2>Lineage of a traced output</h2><p>{}: prompt <code>{}</code>, output <code>{}</code>. Edge width: the source's salient score.</p>{}",
            esc(label),
            esc(&a.prompt),
            esc(&a.output),
            lineage(label, a, &d.policy_authority, &d.operator)
        );
    }
    let loss: Vec<(f64, f64)> = d
        .samples
        .iter()
        .map(|s| (s.attempts as f64, f64::from(s.loss)))
        .collect();
    let rolled: Vec<(f64, f64)> = d
        .samples
        .windows(2)
        .filter(|w| w[1].rolled_back > w[0].rolled_back)
        .map(|w| (w[1].attempts as f64, f64::from(w[1].loss)))
        .collect();
    let events: Vec<(f64, f64)> = d.samples.iter().map(|s| (s.t, s.events as f64)).collect();
    let lat: Vec<(f64, f64)> = d.latencies.clone();
    let _ = write!(
        h,
        r##"<h2>Training and throughput</h2><div class="plots">{}{}{}</div>"##,
        plot(
            "training loss per attempted step",
            "attempted step",
            "loss",
            &[("loss", "#1f77b4", loss), ("rolled back", ".#d62728", rolled)],
            false
        ),
        plot(
            "entries committed over time",
            "seconds",
            "entries",
            &[("committed", "#2ca02c", events)],
            false
        ),
        plot(
            "finality latency per entry (submit to commit)",
            "seconds",
            "latency s",
            &[("entry", "#9467bd", lat)],
            true
        )
    );
    let c = &d.catch_up;
    let _ = write!(
        h,
        "<p>{} was SIGKILLed at attempt {} (height {}), down {:.1} s while the others finalised {} blocks; it synced to height {} {:.2} s after its process started. The gap in the plots is the campaign waiting for its authority's co-signatures.</p>",
        esc(&c.node),
        c.killed_at_attempt,
        c.height_at_kill,
        c.down_s,
        c.target_height.saturating_sub(c.height_at_kill),
        c.target_height,
        c.caught_up_s
    );
    h.push_str("<h2>Refusals by reason</h2><table><tr><th>reason</th><th>source</th><th>examples</th></tr>");
    let mut rows = d.refusals.clone();
    rows.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    for (title, reason, n) in &rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{n}</td></tr>",
            esc(reason),
            esc(title)
        );
    }
    h.push_str("</table><h2>Sources</h2><table><tr><th>title</th><th>authority</th><th>on the ledger</th><th>admission</th><th>examples trained</th><th>examples refused</th><th>id</th></tr>");
    for s in &d.sources {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&s.title),
            esc(&s.authority),
            if s.registered { "yes" } else { "no" },
            esc(&s.admission),
            s.admitted,
            s.refused,
            s.id.short()
        );
    }
    h.push_str("</table><h2>Traces</h2><table><tr><th>output</th><th>prompt → output</th><th>top sources (salient)</th><th>events cited</th></tr>");
    for (label, a) in &d.traces {
        let tops: Vec<String> = a
            .sources
            .iter()
            .take(3)
            .map(|s| format!("{}. {} ({:.2e})", s.rank, esc(&s.title), s.salient))
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code> → <code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(label),
            esc(&short(&a.prompt, 60)),
            esc(&short(&a.output, 60)),
            tops.join("<br>"),
            a.events.len()
        );
    }
    h.push_str("</table><h2>Verifier predicates (light client)</h2><table><tr><th>verdict</th><th>predicate</th></tr>");
    for (what, pass) in &d.predicates {
        let _ = write!(
            h,
            "<tr><td class=\"{}\">{}</td><td>{}</td></tr>",
            if *pass { "pass" } else { "fail" },
            if *pass { "PASS" } else { "FAIL" },
            esc(what)
        );
    }
    let _ = write!(h, "</table><h2>Revocation audit</h2><pre>{}</pre>", esc(&d.audit));
    h.push_str("<h2>Nodes</h2><table><tr><th>node</th><th>log size</th><th>root</th></tr>");
    for (n, size, root) in &d.nodes {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{size}</td><td><code>{}</code></td></tr>",
            esc(n),
            esc(root)
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_plots_without_points() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        let s = plot("t", "x", "y", &[("none", "#000", Vec::new())], false);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        let s = plot(
            "t",
            "x",
            "y",
            &[("nan", "#000", vec![(f64::NAN, 1.0), (1.0, 2.0)])],
            true,
        );
        assert!(!s.contains("NaN"));
    }
}
