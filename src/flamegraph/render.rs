use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::stacks::{Pick, Stacks, ValueKind};
use super::{FlamegraphError, Folding, Profile, SampleFilter};

/// Default title of a CPU flame graph.
pub(crate) const DEFAULT_TITLE: &str = "CPU flame graph";

/// Renders profiles as an SVG flame graph (inferno, Brendan Gregg's layout: root at the
/// bottom, width = CPU time, interactive zoom and search in a browser).
///
/// Stacks of all given profiles are merged, so a directory of window files gives one
/// graph of the whole run. Names are drawn as the profile has them; `;` inside a name
/// (e.g. `[u8; 4]`) is shown as `；`, since `;` separates frames in inferno's input.
#[derive(Debug, Clone, Default)]
pub struct FlameGraph {
    filter: SampleFilter,
    folding: Option<Folding>,
    title: Option<String>,
    image_width: Option<usize>,
    /// The sample type drawn (`None`: CPU time, else the profile's last type).
    sample_type: Option<String>,
}

/// What a rendered flame graph holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rendered {
    /// Samples (stack and label combinations) drawn, before identical stacks are merged.
    pub samples: usize,
    /// Distinct stacks drawn.
    pub stacks: usize,
    /// The total CPU time drawn; `None` when the profiles have no `cpu/nanoseconds` value.
    pub cpu: Option<Duration>,
}

impl FlameGraph {
    /// All samples, the default title and width.
    pub fn new() -> Self {
        Self::default()
    }

    /// Draws only the samples that pass `filter` (default: all).
    pub fn filter(mut self, filter: SampleFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Folds runtime frames (see [`Folding`]; default: none folded). The profiles are not
    /// changed, only the drawing.
    pub fn fold(mut self, folding: Folding) -> Self {
        self.folding = Some(folding);
        self
    }

    /// The title at the top (default "CPU flame graph"); the subtitle always says what was
    /// drawn (the filter and the total).
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Draws the sample type of this name instead of CPU time, e.g. `alloc_space` (bytes
    /// allocated) or `inuse_space` (bytes still live at each window's end) of the
    /// allocation profiles (`*.alloc.pb.gz`). Every profile must have it
    /// ([`FlamegraphError::NoSampleType`]). By default CPU time is drawn, or the last
    /// sample type of profiles without it.
    ///
    /// ```no_run
    /// use span_profiler::flamegraph::{FlameGraph, Profile, SampleFilter};
    ///
    /// let allocations: Vec<Profile> = std::fs::read_dir("./profiles")?
    ///     .flatten()
    ///     .map(|e| e.path())
    ///     .filter(|p| p.to_string_lossy().ends_with(".alloc.pb.gz"))
    ///     .map(Profile::read)
    ///     .collect::<Result<_, _>>()?;
    /// FlameGraph::new()
    ///     .sample_type("alloc_space")
    ///     .filter(SampleFilter::span_name("GET /search"))
    ///     .title("GET /search: bytes allocated")
    ///     .render_to_file(&allocations, "search-alloc.svg")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sample_type(mut self, name: impl Into<String>) -> Self {
        self.sample_type = Some(name.into());
        self
    }

    /// Width of the image in pixels (default: inferno's, 1200).
    pub fn image_width(mut self, pixels: usize) -> Self {
        self.image_width = Some(pixels);
        self
    }

    /// Renders the merged samples of `profiles` into `out` as SVG.
    ///
    /// Fails with [`FlamegraphError::NoSamples`] when no sample passes the filter, and
    /// with [`FlamegraphError::MixedSampleTypes`] when profiles of different sample types are
    /// mixed (e.g. CPU with allocations).
    pub fn render(
        &self,
        profiles: &[Profile],
        out: impl Write,
    ) -> Result<Rendered, FlamegraphError> {
        self.render_inner(profiles, out, None)
    }

    /// Renders into a file (created or replaced). On error no file is left behind.
    pub fn render_to_file(
        &self,
        profiles: &[Profile],
        path: impl AsRef<Path>,
    ) -> Result<Rendered, FlamegraphError> {
        let path = path.as_ref();
        let mut svg = Vec::new();
        let rendered = self.render_inner(profiles, &mut svg, Some(path))?;
        std::fs::write(path, svg).map_err(|source| FlamegraphError::Write {
            path: Some(path.to_owned()),
            source,
        })?;
        Ok(rendered)
    }

    fn render_inner(
        &self,
        profiles: &[Profile],
        out: impl Write,
        path: Option<&Path>,
    ) -> Result<Rendered, FlamegraphError> {
        let mut kind: Option<ValueKind> = None;
        let mut folded: HashMap<String, u64> = HashMap::new();
        let mut samples = 0;
        let mut total = 0u64;
        for profile in profiles {
            let pick = match &self.sample_type {
                Some(name) => Pick::Named(name),
                None => Pick::CpuOrLast,
            };
            let stacks = Stacks::read(profile, &self.filter, pick)?;
            if stacks.stacks.is_empty() {
                continue;
            }
            match &kind {
                None => kind = Some(stacks.kind.clone()),
                Some(k) if *k != stacks.kind => {
                    return Err(FlamegraphError::MixedSampleTypes {
                        origin: profile.origin.clone(),
                    })
                }
                Some(_) => {}
            }
            for stack in &stacks.stacks {
                let root_first: Vec<&str> = stack.frames.iter().rev().map(|f| &*f.name).collect();
                let folded_frames = self.folding.as_ref().and_then(|f| f.apply(&root_first));
                let names: Vec<&str> = match &folded_frames {
                    Some(frames) => frames.iter().map(String::as_str).collect(),
                    None => root_first,
                };
                let mut line = String::new();
                for (i, name) in names.iter().enumerate() {
                    if i > 0 {
                        line.push(';');
                    }
                    push_frame(&mut line, name);
                }
                *folded.entry(line).or_default() += stack.value;
                samples += 1;
                total = total.saturating_add(stack.value);
            }
        }
        let Some(kind) = kind else {
            return Err(FlamegraphError::NoSamples {
                filter: self.filter.to_string(),
            });
        };

        // inferno wants integer counts; CPU is drawn in microseconds (weights are whole
        // sampling periods, so nothing visible is lost).
        let (scale, count_name) = match &kind {
            ValueKind::CpuNanos => (1000, "µs of CPU".to_owned()),
            ValueKind::Other(ty, unit) => (1, format!("{ty} ({unit})")),
        };
        let mut lines: Vec<String> = folded
            .iter()
            .map(|(stack, value)| format!("{stack} {}", (value / scale).max(1)))
            .collect();
        lines.sort_unstable();

        let cpu = (kind == ValueKind::CpuNanos).then(|| Duration::from_nanos(total));
        let mut options = inferno::flamegraph::Options::default();
        options.title = self.title.clone().unwrap_or_else(|| DEFAULT_TITLE.into());
        options.subtitle = Some(match cpu {
            Some(cpu) => format!("{}: {:.3} s of CPU", self.filter, cpu.as_secs_f64()),
            None => format!("{}: {total} {count_name}", self.filter),
        });
        options.count_name = count_name;
        options.deterministic = true;
        options.image_width = self.image_width;
        inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)
            .map_err(|source| FlamegraphError::Write {
                path: path.map(Path::to_owned),
                source,
            })?;
        Ok(Rendered {
            samples,
            stacks: lines.len(),
            cpu,
        })
    }
}

/// Appends a frame name in a form inferno's folded format keeps intact.
fn push_frame(line: &mut String, name: &str) {
    if name.trim().is_empty() {
        line.push('?');
        return;
    }
    for c in name.chars() {
        line.push(match c {
            ';' => '；',
            '\n' | '\r' | '\t' => ' ',
            c => c,
        });
    }
}
