//! The wire format of a step entry, and its validation.

use crate::ids::{Attempt, RunId};
use crate::store::Dispatch;

/// Format version of entries written by this build.
pub const FORMAT_VERSION: &str = "1";

/// A step entry: which attempt of which step of which run to execute.
///
/// Fields on the wire: `v` (format), `run`, `wf`, `step`, `att`, and `tp` (trace context)
/// when the run is traced. Any other field is ignored, so later versions can add some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The run.
    pub run_id: RunId,
    /// The run's workflow.
    pub workflow: String,
    /// The step's stored name.
    pub step: String,
    /// The attempt this entry is for.
    pub attempt: Attempt,
    /// The run's W3C trace context (`traceparent[;tracestate]`), if traced.
    pub trace_context: Option<String>,
}

/// Why an entry could not be decoded: it goes to the dead-letter stream with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed entry: {0}")]
pub struct Malformed(pub String);

impl Message {
    /// The entry's fields.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("v", FORMAT_VERSION.to_owned()),
            ("run", self.run_id.to_string()),
            ("wf", self.workflow.clone()),
            ("step", self.step.clone()),
            ("att", self.attempt.to_string()),
        ];
        if let Some(tp) = &self.trace_context {
            fields.push(("tp", tp.clone()));
        }
        fields
    }

    /// Decodes an entry's fields.
    ///
    /// # Errors
    /// [`Malformed`] naming the first missing or invalid field.
    pub fn from_fields(fields: &[(String, String)]) -> Result<Self, Malformed> {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| Malformed(format!("missing field {name:?}")))
        };
        let version = get("v")?;
        if version != FORMAT_VERSION {
            return Err(Malformed(format!("unsupported format version {version:?}")));
        }
        let run_id = get("run")?
            .parse()
            .map_err(|e| Malformed(format!("field \"run\" is not a run id: {e}")))?;
        let workflow = get("wf")?.to_owned();
        let step = get("step")?.to_owned();
        if workflow.is_empty() || step.is_empty() {
            return Err(Malformed("empty workflow or step name".into()));
        }
        let attempt = get("att")?
            .parse::<Attempt>()
            .ok()
            .filter(|a| *a >= 1)
            .ok_or_else(|| Malformed("field \"att\" is not an attempt number".into()))?;
        let trace_context = get("tp").ok().map(str::to_owned);
        Ok(Self {
            run_id,
            workflow,
            step,
            attempt,
            trace_context,
        })
    }
}

impl From<&Dispatch> for Message {
    fn from(d: &Dispatch) -> Self {
        Self {
            run_id: d.run_id,
            workflow: d.workflow.clone(),
            step: d.step.clone(),
            attempt: d.attempt,
            trace_context: d.trace_context.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(m: &Message) -> Vec<(String, String)> {
        m.to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[test]
    fn a_message_survives_its_wire_format() {
        let m = Message {
            run_id: RunId::new(),
            workflow: "demo".into(),
            step: "square[3]".into(),
            attempt: 2,
            trace_context: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        assert_eq!(Message::from_fields(&fields(&m)).unwrap(), m);
    }

    #[test]
    fn malformed_entries_name_the_problem() {
        let m = Message {
            run_id: RunId::new(),
            workflow: "demo".into(),
            step: "a".into(),
            attempt: 1,
            trace_context: None,
        };
        let mut f = fields(&m);
        f.retain(|(k, _)| k != "run");
        assert_eq!(
            Message::from_fields(&f).unwrap_err().0,
            "missing field \"run\""
        );
        let mut f = fields(&m);
        f[1].1 = "not-a-uuid".into();
        assert!(
            Message::from_fields(&f)
                .unwrap_err()
                .0
                .contains("not a run id")
        );
        let mut f = fields(&m);
        f[4].1 = "0".into();
        assert!(Message::from_fields(&f).unwrap_err().0.contains("attempt"));
        assert!(Message::from_fields(&[("garbage".into(), "{".into())]).is_err());
    }
}
