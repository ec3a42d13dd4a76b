//! The three tasks of the reference workload (`../reference/lsst/tasks.py`).

use std::sync::Arc;
use std::time::Duration;

use quanta_core::DataId;
use quanta_runtime::{PipelineTask, TaskContext, TaskError, TaskRegistry};
use serde_json::{Map, Value};

/// Test hooks shared by the example tasks.
#[derive(Debug, Clone, Default)]
struct Hooks {
    fail_on: Vec<Map<String, Value>>,
    sleep: Option<Duration>,
    /// Data IDs that fail with a bad-input error (a deterministic failure
    /// that batch restarts must not retry).
    bad_input_on: Vec<Map<String, Value>>,
    /// Data IDs that fail once: the first attempt leaves a marker file in
    /// `marker_dir` and fails; later attempts (in any process) succeed.
    transient_on: Vec<Map<String, Value>>,
    marker_dir: Option<std::path::PathBuf>,
    /// Megabytes to allocate and touch, on `allocate_on` data IDs (all when
    /// absent): drives a worker's memory limit in tests.
    allocate_mb: Option<u64>,
    allocate_on: Option<Vec<Map<String, Value>>>,
}

const HOOK_KEYS: &[&str] = &[
    "fail_on",
    "sleep_ms",
    "bad_input_on",
    "transient_on",
    "marker_dir",
    "allocate_mb",
    "allocate_on",
    // Resource requests for batch engines; read by `quanta submit`, not here.
    "batch",
];

fn data_id_list(key: &str, v: Option<&Value>) -> Result<Vec<Map<String, Value>>, TaskError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => Ok(vec![m.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::Object(m) => Ok(m.clone()),
                other => Err(TaskError::Config(format!(
                    "{key}: expected data ID objects, got {other}"
                ))),
            })
            .collect(),
        Some(other) => Err(TaskError::Config(format!(
            "{key}: expected a data ID object or a list of them, got {other}"
        ))),
    }
}

impl Hooks {
    fn from_config(config: &Value) -> Result<Self, TaskError> {
        let obj = match config {
            Value::Null => return Ok(Self::default()),
            Value::Object(o) => o,
            other => {
                return Err(TaskError::Config(format!(
                    "expected an object, got {other}"
                )))
            }
        };
        for key in obj.keys() {
            if !HOOK_KEYS.contains(&key.as_str()) {
                return Err(TaskError::Config(format!(
                    "unknown key `{key}` (known: {})",
                    HOOK_KEYS.join(", ")
                )));
            }
        }
        let fail_on = match obj.get("fail_on") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(m)) => vec![m.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::Object(m) => Ok(m.clone()),
                    other => Err(TaskError::Config(format!(
                        "fail_on: expected data ID objects, got {other}"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(TaskError::Config(format!(
                    "fail_on: expected a data ID object or a list of them, got {other}"
                )))
            }
        };
        let sleep = match obj.get("sleep_ms") {
            None | Some(Value::Null) => None,
            Some(v) => Some(Duration::from_millis(v.as_u64().ok_or_else(|| {
                TaskError::Config(format!("sleep_ms: expected milliseconds, got {v}"))
            })?)),
        };
        let transient_on = data_id_list("transient_on", obj.get("transient_on"))?;
        let marker_dir = match obj.get("marker_dir") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => Some(std::path::PathBuf::from(p)),
            Some(v) => {
                return Err(TaskError::Config(format!(
                    "marker_dir: expected a path, got {v}"
                )))
            }
        };
        if !transient_on.is_empty() && marker_dir.is_none() {
            return Err(TaskError::Config(
                "transient_on needs marker_dir (where first failures are remembered)".into(),
            ));
        }
        let allocate_mb = match obj.get("allocate_mb") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                TaskError::Config(format!("allocate_mb: expected megabytes, got {v}"))
            })?),
        };
        let allocate_on = match obj.get("allocate_on") {
            None | Some(Value::Null) => None,
            v => Some(data_id_list("allocate_on", v)?),
        };
        Ok(Self {
            fail_on,
            sleep,
            bad_input_on: data_id_list("bad_input_on", obj.get("bad_input_on"))?,
            transient_on,
            marker_dir,
            allocate_mb,
            allocate_on,
        })
    }

    fn apply(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        if let Some(d) = self.sleep {
            std::thread::sleep(d);
        }
        let data_id = ctx.data_id().clone();
        if self.fail_on.iter().any(|m| matches(m, &data_id)) {
            ctx.log(format!("fail_on matches {data_id}: failing on purpose"));
            return Err(TaskError::Failed(format!(
                "configured to fail on {data_id} (fail_on)"
            )));
        }
        if self.bad_input_on.iter().any(|m| matches(m, &data_id)) {
            return Err(TaskError::BadInput {
                connection: "(bad_input_on)".into(),
                detail: format!("configured to reject the input of {data_id}"),
            });
        }
        if let (true, Some(dir)) = (
            self.transient_on.iter().any(|m| matches(m, &data_id)),
            &self.marker_dir,
        ) {
            let marker = dir.join(format!(
                "{}-{}",
                ctx.label(),
                &quanta_core::hash::blake3_hex(data_id.to_string().as_bytes())[..16]
            ));
            if !marker.exists() {
                std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::write(&marker, b"failed once\n"))
                    .map_err(|e| {
                        TaskError::Failed(format!(
                            "transient_on: writing {}: {e}",
                            marker.display()
                        ))
                    })?;
                return Err(TaskError::Failed(format!(
                    "configured to fail once on {data_id} (transient_on)"
                )));
            }
        }
        if let Some(mb) = self.allocate_mb {
            let applies = self
                .allocate_on
                .as_ref()
                .is_none_or(|l| l.iter().any(|m| matches(m, &data_id)));
            if applies {
                // Touch every page so the memory is really used, then keep
                // the result observable so the allocation is not elided.
                let mut v = vec![0u8; (mb as usize).saturating_mul(1 << 20)];
                for i in (0..v.len()).step_by(4096) {
                    v[i] = 1;
                }
                let sum: u64 = v.iter().step_by(4096).map(|b| u64::from(*b)).sum();
                ctx.log(format!("allocate_mb: touched {sum} pages"));
            }
        }
        Ok(())
    }
}

/// Whether every key of `m` is in `data_id` with an equal value.
fn matches(m: &Map<String, Value>, data_id: &DataId) -> bool {
    m.iter().all(|(k, v)| match data_id.get(k) {
        Some(x) => match (x.as_int(), x.as_str()) {
            (Some(i), _) => v.as_i64() == Some(i),
            (_, Some(s)) => v.as_str() == Some(s),
            _ => false,
        },
        None => false,
    })
}

fn object(connection: &str, v: Value) -> Result<Map<String, Value>, TaskError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(TaskError::BadInput {
            connection: connection.into(),
            detail: format!("expected a JSON object, got {}", kind(&other)),
        }),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn pixels<'a>(connection: &str, m: &'a Map<String, Value>) -> Result<&'a Vec<Value>, TaskError> {
    m.get("pixels")
        .and_then(Value::as_array)
        .ok_or_else(|| TaskError::BadInput {
            connection: connection.into(),
            detail: "no `pixels` array".into(),
        })
}

/// `isr`: raw → postISRCCD, every pixel −1 and `isr: true`.
#[derive(Debug)]
pub struct Isr {
    hooks: Hooks,
}

impl PipelineTask for Isr {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.hooks.apply(ctx)?;
        let mut post = object("raw", ctx.get_json::<Value>("raw")?)?;
        let px = pixels("raw", &post)?
            .iter()
            .map(|p| match (p.as_i64(), p.as_f64()) {
                (Some(i), _) => Ok(Value::from(i - 1)),
                (None, Some(f)) => Ok(Value::from(f - 1.0)),
                _ => Err(TaskError::BadInput {
                    connection: "raw".into(),
                    detail: format!("pixel {p} is not a number"),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        post.insert("pixels".into(), Value::Array(px));
        post.insert("isr".into(), Value::Bool(true));
        ctx.put_json("post", &post)
    }
}

/// `characterize`: postISRCCD → icExp, adding `psf` = mean of the pixels.
#[derive(Debug)]
pub struct Characterize {
    hooks: Hooks,
}

impl PipelineTask for Characterize {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.hooks.apply(ctx)?;
        let mut icexp = object("post", ctx.get_json::<Value>("post")?)?;
        let px = pixels("post", &icexp)?;
        if px.is_empty() {
            return Err(TaskError::BadInput {
                connection: "post".into(),
                detail: "`pixels` is empty; the mean is undefined".into(),
            });
        }
        let mut sum = 0.0;
        for p in px {
            sum += p.as_f64().ok_or_else(|| TaskError::BadInput {
                connection: "post".into(),
                detail: format!("pixel {p} is not a number"),
            })?;
        }
        let psf = sum / px.len() as f64;
        icexp.insert("psf".into(), Value::from(psf));
        ctx.put_json("icexp", &icexp)
    }
}

/// `summarize`: all icExp of an exposure → expSummary `{n, psf: [...]}`,
/// psf ordered by detector.
#[derive(Debug)]
pub struct Summarize {
    hooks: Hooks,
}

impl PipelineTask for Summarize {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.hooks.apply(ctx)?;
        let mut all: Vec<(i64, Value)> = Vec::new();
        for (r, v) in ctx.get_all_json::<Value>("icexps")? {
            let det = r
                .data_id
                .get("detector")
                .and_then(|d| d.as_int())
                .ok_or_else(|| TaskError::BadInput {
                    connection: "icexps".into(),
                    detail: format!("{} has no integer detector", r.data_id),
                })?;
            let psf = v.get("psf").cloned().ok_or_else(|| TaskError::BadInput {
                connection: "icexps".into(),
                detail: format!("{} has no `psf`", r.data_id),
            })?;
            all.push((det, psf));
        }
        all.sort_by_key(|(d, _)| *d);
        let n = all.len();
        ctx.log(format!("summarizing {n} icExp of {}", ctx.data_id()));
        let summary = serde_json::json!({
            "n": n,
            "psf": all.into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
        });
        ctx.put_json("summary", &summary)
    }
}

/// Registers the example tasks under `examples.*` (the FITS pipeline's
/// under `examples.fits.*`).
pub fn register(reg: &mut TaskRegistry) {
    crate::fits::register(reg);
    crate::coadd::register(reg);
    reg.register("examples.Isr", |c| {
        Ok(Arc::new(Isr {
            hooks: Hooks::from_config(c)?,
        }) as Arc<dyn PipelineTask>)
    });
    reg.register("examples.Characterize", |c| {
        Ok(Arc::new(Characterize {
            hooks: Hooks::from_config(c)?,
        }) as Arc<dyn PipelineTask>)
    });
    reg.register("examples.Summarize", |c| {
        Ok(Arc::new(Summarize {
            hooks: Hooks::from_config(c)?,
        }) as Arc<dyn PipelineTask>)
    });
}

/// A registry holding just the example tasks.
pub fn task_registry() -> TaskRegistry {
    let mut r = TaskRegistry::new();
    register(&mut r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_parse_and_reject_bad_config() {
        let h = Hooks::from_config(&serde_json::json!({"fail_on": {"exposure": 3}, "sleep_ms": 5}))
            .unwrap();
        assert_eq!(h.fail_on.len(), 1);
        assert_eq!(h.sleep, Some(Duration::from_millis(5)));
        let d = DataId::from_pairs([("instrument", "Cam".into()), ("exposure", 3i64.into())]
            as [(&str, quanta_core::DataIdValue); 2]);
        assert!(matches(&h.fail_on[0], &d));
        let d4 = DataId::from_pairs([("exposure", 4i64)]);
        assert!(!matches(&h.fail_on[0], &d4));
        for bad in [
            serde_json::json!({"fail_on": 3}),
            serde_json::json!({"sleep_ms": "x"}),
            serde_json::json!({"typo": 1}),
            serde_json::json!([1]),
        ] {
            assert!(Hooks::from_config(&bad).is_err(), "{bad}");
        }
        let h = Hooks::from_config(&serde_json::json!({
            "bad_input_on": {"exposure": 3}, "transient_on": [{"detector": 1}],
            "marker_dir": "/tmp/m", "allocate_mb": 10, "allocate_on": {"exposure": 1},
            "batch": {"mem": "1G"}}))
        .unwrap();
        assert_eq!((h.bad_input_on.len(), h.transient_on.len()), (1, 1));
        assert_eq!(h.allocate_mb, Some(10));
        for bad in [
            serde_json::json!({"transient_on": {"detector": 1}}),
            serde_json::json!({"allocate_mb": -1}),
            serde_json::json!({"bad_input_on": 3}),
        ] {
            assert!(Hooks::from_config(&bad).is_err(), "{bad}");
        }
        assert!(task_registry()
            .create("examples.Isr", &serde_json::json!({"typo": 1}))
            .unwrap()
            .is_err());
    }
}
