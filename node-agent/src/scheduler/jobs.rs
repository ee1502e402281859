//! Cron jobs (PROTOCOL.md §5.5): the stored shape, the normalisation of what clients send,
//! when a job is next due, and the durable run history.
//!
//! Jobs live in the state plane (`argent_cron/job.<id>`), so every node-agent's scheduler
//! sees them; their run history is an append-only log in the transcript plane
//! (`cronruns-<id>`: a JetStream subject in a cluster, a JSON-lines file embedded).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::ServiceError;

use super::claim::{Claim, Claimable};
use super::schedule::{iso, Schedule};

/// A job whose `at` run failed is tried again after this long.
pub const AT_RETRY_MS: u64 = 30_000;

pub fn job_key(id: &str) -> String {
    format!("job.{id}")
}

/// The run-history log of a job.
pub fn runs_log(id: &str) -> String {
    format!("cronruns-{id}")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_execution_mode: Option<String>,
    /// [EXT] The node running the job now and since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronJob {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_after_run: Option<bool>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub schedule: Value,
    pub session_target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_mode: Option<String>,
    pub wake_mode: String,
    pub payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Value>,
    #[serde(default)]
    pub state: JobState,
}

impl Claimable for CronJob {
    fn claim(&self) -> Option<&Claim> {
        self.state.claim.as_ref()
    }
    fn claim_mut(&mut self) -> &mut Option<Claim> {
        &mut self.state.claim
    }
}

impl CronJob {
    pub fn schedule(&self) -> Result<Schedule, String> {
        Schedule::from_value(&self.schedule, self.created_at_ms)
    }

    pub fn is_at(&self) -> bool {
        self.schedule["kind"] == "at"
    }

    pub fn payload_kind(&self) -> &str {
        self.payload["kind"].as_str().unwrap_or("")
    }

    /// When the job is due next, from `after_ms` on (`None`: not scheduled). An `at` job
    /// stays due until it succeeded; after a failure it is tried again after a pause.
    pub fn next_run(&self, after_ms: u64) -> Option<u64> {
        if !self.enabled {
            return None;
        }
        let schedule = self.schedule().ok()?;
        match schedule {
            Schedule::At(at) => match self.state.last_status.as_deref() {
                Some("ok") => None,
                Some(_) => Some(
                    at.max(
                        self.state
                            .last_run_at_ms
                            .unwrap_or(0)
                            .saturating_add(AT_RETRY_MS),
                    ),
                ),
                None => Some(at),
            },
            other => other.next_after(after_ms),
        }
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("jobs serialize")
    }
}

/// Payload kinds, and the session target each needs (§5.5 rules).
const MAIN_KINDS: &[&str] = &["systemEvent", "audioAlert"];
const ISOLATED_KINDS: &[&str] = &["agentTurn", "vipEmailScan", "slackSignalScan"];

fn invalid(method: &str, detail: &str) -> ServiceError {
    ServiceError::invalid(method, detail)
}

/// `{data:{…}}` / `{job:{…}}` unwrapped.
fn unwrap_job(params: Value) -> Value {
    match params {
        Value::Object(mut o) => {
            for wrapper in ["data", "job"] {
                if o.len() == 1 && o.get(wrapper).is_some_and(Value::is_object) {
                    return o.remove(wrapper).expect("checked above");
                }
            }
            Value::Object(o)
        }
        other => other,
    }
}

/// Upstream's schedule normalisation: `atMs` → ISO `at`, the kind inferred from the fields.
fn normalise_schedule(method: &str, schedule: &mut Value) -> Result<(), ServiceError> {
    let Some(object) = schedule.as_object_mut() else {
        return Err(invalid(method, "at /schedule: must be object"));
    };
    if let Some(at_ms) = object.remove("atMs") {
        let ms = match &at_ms {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        }
        .ok_or_else(|| invalid(method, "at /schedule/atMs: must be a timestamp in ms"))?;
        object.insert("at".into(), json!(iso(ms)));
    }
    if !object.contains_key("kind") {
        let kind = if object.contains_key("at") {
            "at"
        } else if object.contains_key("everyMs") {
            "every"
        } else if object.contains_key("expr") {
            "cron"
        } else {
            return Err(invalid(
                method,
                "at /schedule: must have at, everyMs or expr",
            ));
        };
        object.insert("kind".into(), json!(kind));
    }
    Ok(())
}

fn bool_field(
    method: &str,
    object: &mut Map<String, Value>,
    key: &str,
) -> Result<(), ServiceError> {
    if let Some(value) = object.get_mut(key) {
        *value = match &*value {
            Value::Bool(b) => json!(b),
            Value::String(s) if s == "true" => json!(true),
            Value::String(s) if s == "false" => json!(false),
            Value::Null => return Ok(()),
            _ => return Err(invalid(method, &format!("at /{key}: must be boolean"))),
        };
    }
    Ok(())
}

/// Legacy agentTurn fields (`deliver`, `channel`, `to`, `bestEffortDeliver`) → `delivery`.
fn legacy_delivery(object: &mut Map<String, Value>) {
    let Some(payload) = object.get_mut("payload").and_then(Value::as_object_mut) else {
        return;
    };
    let mut delivery = Map::new();
    if let Some(deliver) = payload.remove("deliver") {
        delivery.insert(
            "mode".into(),
            json!(if deliver == true { "announce" } else { "none" }),
        );
    }
    for (from, to) in [
        ("channel", "channel"),
        ("to", "to"),
        ("bestEffortDeliver", "bestEffort"),
    ] {
        if let Some(value) = payload.remove(from) {
            delivery.insert(to.into(), value);
        }
    }
    if !delivery.is_empty() && !object.contains_key("delivery") {
        delivery.entry("mode").or_insert(json!("announce"));
        object.insert("delivery".into(), Value::Object(delivery));
    }
}

/// Checks the payload and its pairing with the session target. A rule violation is thrown
/// upstream, which surfaces as `UNAVAILABLE`.
fn check_payload(method: &str, job: &CronJob) -> Result<(), ServiceError> {
    let kind = job.payload_kind();
    let required = |field: &str| -> Result<(), ServiceError> {
        match job.payload.get(field).and_then(Value::as_str) {
            Some(text) if !text.trim().is_empty() => Ok(()),
            _ => Err(invalid(
                method,
                &format!("at /payload/{field}: must be non-empty string"),
            )),
        }
    };
    match kind {
        "systemEvent" => required("text")?,
        "audioAlert" => required("message")?,
        "agentTurn" => required("message")?,
        "vipEmailScan" | "slackSignalScan" => {}
        "" => return Err(invalid(method, "at /payload/kind: must be string")),
        other => {
            return Err(invalid(
                method,
                &format!("at /payload/kind: unknown payload kind \"{other}\""),
            ))
        }
    }
    let fits = match job.session_target.as_str() {
        "main" => MAIN_KINDS.contains(&kind),
        "isolated" => ISOLATED_KINDS.contains(&kind),
        _ => {
            return Err(invalid(
                method,
                "at /sessionTarget: must be equal to one of the allowed values",
            ))
        }
    };
    if !fits {
        let needs = if job.session_target == "main" {
            "main cron jobs require payload.kind=\"systemEvent\" or \"audioAlert\""
        } else {
            "isolated cron jobs require payload.kind=\"agentTurn\", \"vipEmailScan\" or \"slackSignalScan\""
        };
        return Err(ServiceError::Refused(needs.to_string()));
    }
    if !matches!(job.wake_mode.as_str(), "next-heartbeat" | "now") {
        return Err(invalid(
            method,
            "at /wakeMode: must be equal to one of the allowed values",
        ));
    }
    if let Some(mode) = &job.execution_mode {
        if !matches!(mode.as_str(), "live" | "paper_trade") {
            return Err(invalid(
                method,
                "at /executionMode: must be equal to one of the allowed values",
            ));
        }
    }
    Ok(())
}

/// Checks the schedule, including the `at` window (≥ now − 1 min, ≤ now + 10 years).
fn check_schedule(method: &str, job: &CronJob, now_ms: u64) -> Result<(), ServiceError> {
    let schedule = job
        .schedule()
        .map_err(|e| invalid(method, &format!("at /schedule: {e}")))?;
    if let Schedule::At(at) = schedule {
        const TEN_YEARS_MS: u64 = 10 * 366 * 24 * 3_600_000;
        if at + 60_000 < now_ms || at > now_ms + TEN_YEARS_MS {
            return Err(invalid(
                method,
                "at /schedule/at: must be between one minute ago and ten years from now",
            ));
        }
    }
    Ok(())
}

/// The job in `value`, or the params error naming the field (`at /<prefix>/<path>: …`).
fn decode(method: &str, value: &Value, prefix: &str) -> Result<CronJob, ServiceError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string().replace('.', "/");
        invalid(method, &format!("at {prefix}/{path}: {}", e.inner()))
    })
}

/// `cron.add`: the normalised, validated new job (with its first due time).
pub fn new_job(params: Value, id: String, now_ms: u64) -> Result<CronJob, ServiceError> {
    const METHOD: &str = "cron.add";
    let mut params = unwrap_job(params);
    let Some(object) = params.as_object_mut() else {
        return Err(invalid(METHOD, "must be object"));
    };
    const ALLOWED: &[&str] = &[
        "name",
        "schedule",
        "sessionTarget",
        "wakeMode",
        "payload",
        "agentId",
        "description",
        "enabled",
        "deleteAfterRun",
        "executionMode",
        "delivery",
    ];
    legacy_delivery(object);
    if let Some(key) = object.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
        return Err(invalid(
            METHOD,
            &format!("at root: unexpected property '{key}'"),
        ));
    }
    if let Some(schedule) = object.get_mut("schedule") {
        normalise_schedule(METHOD, schedule)?;
    } else {
        return Err(invalid(
            METHOD,
            "at root: must have required property 'schedule'",
        ));
    }
    bool_field(METHOD, object, "enabled")?;
    bool_field(METHOD, object, "deleteAfterRun")?;
    let payload_kind = object
        .get("payload")
        .and_then(|p| p.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    object.entry("wakeMode").or_insert(json!("next-heartbeat"));
    object.entry("enabled").or_insert(json!(true));
    object.entry("sessionTarget").or_insert(json!(
        if MAIN_KINDS.contains(&payload_kind.as_str()) {
            "main"
        } else {
            "isolated"
        }
    ));
    if object["schedule"]["kind"] == "at" {
        object.entry("deleteAfterRun").or_insert(json!(true));
    }
    if object["sessionTarget"] == "isolated" && payload_kind == "agentTurn" {
        object
            .entry("delivery")
            .or_insert(json!({"mode": "announce"}));
    }
    if object.get("agentId").is_some_and(Value::is_null) {
        object.remove("agentId");
    }
    object.insert("id".into(), json!(id));
    object.insert("createdAtMs".into(), json!(now_ms));
    object.insert("updatedAtMs".into(), json!(now_ms));
    let mut job = decode(METHOD, &params, "")?;
    check_name(METHOD, &job, "")?;
    check_payload(METHOD, &job)?;
    check_schedule(METHOD, &job, now_ms)?;
    job.state = JobState {
        next_run_at_ms: None,
        ..Default::default()
    };
    job.state.next_run_at_ms = job.next_run(now_ms);
    Ok(job)
}

/// A job has a name, at creation and after every update (PROTOCOL.md §5.5).
fn check_name(method: &str, job: &CronJob, prefix: &str) -> Result<(), ServiceError> {
    if job.name.trim().is_empty() {
        return Err(invalid(
            method,
            &format!("at {prefix}/name: must NOT have fewer than 1 characters"),
        ));
    }
    Ok(())
}

/// `cron.update`: `patch` applied to `job` (payload, delivery and state merge as partials).
pub fn apply_patch(job: &CronJob, patch: &Value, now_ms: u64) -> Result<CronJob, ServiceError> {
    const METHOD: &str = "cron.update";
    let Some(patch) = patch.as_object() else {
        return Err(invalid(METHOD, "at /patch: must be object"));
    };
    let mut value = job.to_value();
    for (key, change) in patch {
        match key.as_str() {
            "id" | "createdAtMs" => {
                return Err(invalid(
                    METHOD,
                    &format!("at /patch: unexpected property '{key}'"),
                ))
            }
            "payload" | "delivery" | "state" if change.is_object() => {
                let target = &mut value[key.as_str()];
                if !target.is_object() {
                    *target = json!({});
                }
                for (field, v) in change.as_object().expect("checked above") {
                    target[field.as_str()] = v.clone();
                }
            }
            "schedule" => {
                let mut schedule = change.clone();
                normalise_schedule(METHOD, &mut schedule)?;
                value["schedule"] = schedule;
            }
            _ => value[key.as_str()] = change.clone(),
        }
    }
    if let Some(object) = value.as_object_mut() {
        bool_field(METHOD, object, "enabled")?;
        bool_field(METHOD, object, "deleteAfterRun")?;
    }
    value["updatedAtMs"] = json!(now_ms);
    let mut updated = decode(METHOD, &value, "/patch")?;
    check_name(METHOD, &updated, "/patch")?;
    check_payload(METHOD, &updated)?;
    if patch.contains_key("schedule") {
        check_schedule(METHOD, &updated, now_ms)?;
    }
    updated.state.next_run_at_ms = updated.next_run(now_ms);
    Ok(updated)
}

/// One entry of `cron.runs`.
pub fn run_entry(
    job_id: &str,
    status: &str,
    run_at_ms: u64,
    duration_ms: u64,
    detail: &str,
    next_run_at_ms: Option<u64>,
    node: &str,
) -> Value {
    let mut entry = json!({
        "ts": argent_proto::now_ms(), "jobId": job_id, "action": "finished", "status": status,
        "runAtMs": run_at_ms, "durationMs": duration_ms, "nextRunAtMs": next_run_at_ms,
        "node": node,
    });
    if status == "ok" {
        entry["summary"] = json!(detail);
    } else {
        entry["error"] = json!(detail);
    }
    entry
}

pub fn unknown_job(id: &str) -> ServiceError {
    ServiceError::UnknownJob(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::schedule::parse_iso;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn add_normalises_like_upstream() {
        let job = new_job(
            json!({"job": {"name": "ping", "schedule": {"atMs": (NOW + 60_000).to_string()},
                    "payload": {"kind": "systemEvent", "text": "hi"}, "enabled": "true"}}),
            "j1".into(),
            NOW,
        )
        .unwrap();
        assert_eq!(job.schedule["kind"], "at");
        assert_eq!(job.session_target, "main");
        assert_eq!(job.wake_mode, "next-heartbeat");
        assert_eq!(job.delete_after_run, Some(true));
        assert_eq!(job.state.next_run_at_ms, Some(NOW + 60_000));

        let job = new_job(
            json!({"name": "digest", "schedule": {"expr": "0 9 * * *", "tz": "Europe/Paris"},
                   "payload": {"kind": "agentTurn", "message": "sum up", "deliver": true, "to": "me"}}),
            "j2".into(),
            NOW,
        )
        .unwrap();
        assert_eq!(job.session_target, "isolated");
        assert_eq!(job.delivery, Some(json!({"mode": "announce", "to": "me"})));
        assert!(job.payload.get("deliver").is_none());
    }

    #[test]
    fn add_refuses_what_upstream_refuses() {
        // As the client sees it.
        let add = |v: Value| {
            argent_proto::errors::RpcError::from(new_job(v, "j".into(), NOW).unwrap_err())
        };
        let e = add(
            json!({"name": "x", "schedule": {"everyMs": 1000}, "sessionTarget": "main",
                           "payload": {"kind": "agentTurn", "message": "m"}}),
        );
        assert_eq!(e.code.as_str(), "UNAVAILABLE");
        let e = add(
            json!({"name": "x", "schedule": {"at": "2020-01-01T00:00:00Z"},
                           "payload": {"kind": "systemEvent", "text": "t"}}),
        );
        assert!(e.message.contains("one minute ago"), "{}", e.message);
        let e = add(
            json!({"name": "x", "schedule": {"everyMs": 1000}, "bogus": 1,
                           "payload": {"kind": "systemEvent", "text": "t"}}),
        );
        assert!(e.message.contains("bogus"));
        let e = add(json!({"name": "", "schedule": {"everyMs": 1000},
                           "payload": {"kind": "systemEvent", "text": "t"}}));
        assert!(e.message.contains("/name"));
    }

    #[test]
    fn patches_merge_partials_and_recompute_the_next_run() {
        let job = new_job(
            json!({"name": "e", "schedule": {"everyMs": 1000, "anchorMs": 0},
                   "payload": {"kind": "systemEvent", "text": "a"}}),
            "j".into(),
            NOW,
        )
        .unwrap();
        let updated = apply_patch(
            &job,
            &json!({"payload": {"text": "b"}, "enabled": false}),
            NOW,
        )
        .unwrap();
        assert_eq!(updated.payload, json!({"kind": "systemEvent", "text": "b"}));
        assert_eq!(updated.state.next_run_at_ms, None);
        assert!(apply_patch(&job, &json!({"id": "other"}), NOW).is_err());
        // `cron.add` refuses a job without a name; so does `cron.update`.
        let nameless = apply_patch(&job, &json!({"name": " "}), NOW).unwrap_err();
        assert!(
            nameless.to_string().contains("at /patch/name"),
            "{nameless}"
        );
    }

    #[test]
    fn a_failed_at_job_stays_due() {
        let mut job = new_job(
            json!({"name": "once", "schedule": {"at": iso(NOW + 1000)},
                   "payload": {"kind": "systemEvent", "text": "t"}}),
            "j".into(),
            NOW,
        )
        .unwrap();
        job.state.last_status = Some("error".into());
        job.state.last_run_at_ms = Some(NOW + 2000);
        assert_eq!(job.next_run(NOW + 3000), Some(NOW + 2000 + AT_RETRY_MS));
        job.state.last_status = Some("ok".into());
        assert_eq!(job.next_run(NOW + 3000), None);
        assert_eq!(parse_iso(&iso(NOW)).unwrap(), NOW);
    }
}
