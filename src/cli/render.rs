//! Tables for people, and the time and plan arguments they type.
//!
//! Each renderer takes the API's JSON, as `--json` prints it, so the two
//! outputs can never disagree about what keyward answered.

use base64::Engine;
use serde_json::Value;

use crate::clock::now;
use crate::clock::{civil_from_days, days_from_civil};
use crate::plan::{Interval, Limit, Per, Refill, MAX_AMOUNT};

/// Unix seconds as UTC, `2027-01-31T12:00:00Z`.
pub fn time(secs: f64) -> String {
    if !secs.is_finite() || secs.abs() > 1e13 {
        return format!("{secs}");
    }
    let secs = secs.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `--expires-at`: Unix seconds, or UTC as `2027-01-31`,
/// `2027-01-31T12:00Z` or `2027-01-31T12:00:00Z`.
pub fn parse_time(s: &str) -> Result<f64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return if secs.is_finite() {
            Ok(secs)
        } else {
            Err("not a time".into())
        };
    }
    let bad = || format!("{s:?}: expected Unix seconds or a UTC time like 2027-01-31T12:00:00Z");
    let (date, clock) = match s.split_once('T') {
        Some((date, clock)) => (date, Some(clock.strip_suffix('Z').ok_or_else(bad)?)),
        None => (s, None),
    };
    let mut parts = date.splitn(3, '-');
    let mut num = |max: u32| -> Result<u32, String> {
        let n: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        (n <= max).then_some(n).ok_or_else(bad)
    };
    let (year, month, day) = (num(9999)?, num(12)?, num(31)?);
    if month == 0 || day == 0 {
        return Err(bad());
    }
    let mut secs = 0u32;
    if let Some(clock) = clock {
        let fields: Vec<&str> = clock.split(':').collect();
        if !(2..=3).contains(&fields.len()) {
            return Err(bad());
        }
        for (i, (field, max)) in fields.iter().zip([23u32, 59, 59]).enumerate() {
            let n: u32 = field.parse().map_err(|_| bad())?;
            if n > max {
                return Err(bad());
            }
            secs += n * [3600, 60, 1][i];
        }
    }
    let days = days_from_civil(i64::from(year), month, day);
    Ok((days * 86_400 + i64::from(secs)) as f64)
}

/// `--expires-in`: a whole number and `s`, `m`, `h` or `d`.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let bad = || format!("{s:?}: expected a number and s, m, h or d, like 90d or 12h");
    let unit = match s.chars().last() {
        Some('s') => 1.0,
        Some('m') => 60.0,
        Some('h') => 3600.0,
        Some('d') => 86_400.0,
        _ => return Err(bad()),
    };
    let n: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(bad());
    }
    Ok(n as f64 * unit)
}

/// `keyward usage --from/--to`: a UTC date (`2026-11-01`, its midnight), a
/// UTC time as `--expires-at` takes it, or Unix seconds; whole seconds.
pub fn parse_instant(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?}: expected a UTC date like 2026-11-01 or whole Unix seconds");
    match parse_time(s) {
        Ok(secs) if secs.fract() == 0.0 && (0.0..=253_402_300_799.0).contains(&secs) => {
            Ok(secs as i64)
        }
        _ => Err(bad()),
    }
}

/// `NAME=N`: the name, and N as a whole number from `min` to [`MAX_AMOUNT`].
fn name_and_count<'a>(s: &'a str, min: u64, expected: &str) -> Result<(&'a str, u64), String> {
    let bad = || format!("{s:?}: expected {expected}");
    let (name, n) = s.split_once('=').ok_or_else(bad)?;
    let n: u64 = n.parse().map_err(|_| bad())?;
    (min..=MAX_AMOUNT)
        .contains(&n)
        .then_some((name, n))
        .ok_or_else(bad)
}

/// `--limit`: `PER=N`, e.g. `second=10` or `day=50000`.
pub fn parse_limit(s: &str) -> Result<Limit, String> {
    const PERS: [Per; 5] = [Per::Second, Per::Minute, Per::Hour, Per::Day, Per::Month];
    let expected = "PER=N, PER second, minute, hour, day or month and N 1 or more, like day=50000";
    let (name, limit) = name_and_count(s, 1, expected)?;
    let per = PERS.into_iter().find(|p| p.as_str() == name);
    per.map(|per| Limit { per, limit })
        .ok_or_else(|| format!("{s:?}: expected {expected}"))
}

/// `--refill`: `INTERVAL=AMOUNT`, e.g. `day=500` or `month=100000`.
pub fn parse_refill(s: &str) -> Result<Refill, String> {
    let expected = "INTERVAL=AMOUNT, INTERVAL day or month, like day=500";
    let (name, amount) = name_and_count(s, 0, expected)?;
    let interval = [Interval::Day, Interval::Month]
        .into_iter()
        .find(|i| i.per().as_str() == name);
    interval
        .map(|interval| Refill { interval, amount })
        .ok_or_else(|| format!("{s:?}: expected {expected}"))
}

/// `key add-credits`' amount: a whole number, not 0, negative to take away.
pub fn parse_amount(s: &str) -> Result<i64, String> {
    let max = MAX_AMOUNT as i64;
    match s.parse::<i64>() {
        Ok(n) if n != 0 && (-max..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?}: expected a whole number other than 0 (negative to take credits away)"
        )),
    }
}

/// A key's windows, `day=50000 second=10`, in the API's order.
fn limits(v: &Value, none: &str) -> String {
    match v.as_array() {
        Some(windows) if !windows.is_empty() => windows
            .iter()
            .map(|w| format!("{}={}", text(&w["per"]), text(&w["limit"])))
            .collect::<Vec<_>>()
            .join(" "),
        _ => none.into(),
    }
}

/// A key's credits: `480`, or `480/500 day` when they refill (to 500 each
/// day), then ` (low at 50)` with a warning threshold.
fn credits(v: &Value) -> String {
    if v.is_null() {
        return "unlimited".into();
    }
    let remaining = text(&v["remaining"]);
    let shown = match v["refill"].as_object() {
        Some(refill) => format!(
            "{remaining}/{} {}",
            text(&refill["amount"]),
            text(&refill["interval"])
        ),
        None => remaining,
    };
    match v["low_at"].as_u64() {
        Some(low_at) => format!("{shown} (low at {low_at})"),
        None => shown,
    }
}

fn opt_time(v: &Value, none: &str) -> String {
    v.as_f64().map_or_else(|| none.to_owned(), time)
}

/// Text from a server or from Redis, made safe to print on a terminal:
/// control characters (C0 with line breaks and tabs, DEL, C1: escape
/// sequences, carriage returns that redraw a row, OSC 52 clipboard writes)
/// and the invisible characters that reorder or hide text (bidirectional
/// overrides and isolates, marks, line and paragraph separators) become
/// `\u{..}`. Everything else prints as it is.
pub fn safe(s: &str) -> std::borrow::Cow<'_, str> {
    let hostile = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
            )
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if !s.chars().any(hostile) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match hostile(c) {
            true => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            false => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => safe(s).into_owned(),
        Value::Null => "-".into(),
        other => safe(&other.to_string()).into_owned(),
    }
}

fn list(v: &Value, none: &str) -> String {
    match v.as_array() {
        Some(items) if !items.is_empty() => items.iter().map(text).collect::<Vec<_>>().join(","),
        _ => none.into(),
    }
}

/// Two columns, names padded.
fn pairs(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:width$}  {v}\n"))
        .collect()
}

/// Columns with a header row, each as wide as its widest cell.
fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out += cell;
            } else {
                out += &format!("{cell}{}  ", " ".repeat(w - cell.chars().count()));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out += &line(row.clone());
    }
    out
}

pub fn project(p: &Value) -> String {
    pairs(&[
        ("project_id", text(&p["project_id"])),
        ("label", text(&p["label"])),
        ("owner", text(&p["owner"])),
        ("created_at", opt_time(&p["created_at"], "-")),
    ])
}

/// `disabled`, `expired`, `rotating` or `active`.
fn status(k: &Value) -> &'static str {
    if k["unreadable"].as_bool() == Some(true) {
        "unreadable"
    } else if k["disabled"].as_bool() == Some(true) {
        "disabled"
    } else if k["expires_at"].as_f64().is_some_and(|at| at <= now()) {
        "expired"
    } else if k["previous_expires_at"].is_number() {
        "rotating"
    } else {
        "active"
    }
}

pub fn key(k: &Value) -> String {
    let mut rows = vec![
        ("key_id", text(&k["key_id"])),
        ("status", status(k).to_owned()),
        ("owner", text(&k["owner"])),
        ("server_name", text(&k["server_name"])),
        ("scopes", list(&k["scopes"], "(none)")),
        ("allowed_cidrs", list(&k["allowed_cidrs"], "(any network)")),
        (
            "rate_limit",
            k["rate_limit_per_minute"]
                .as_u64()
                .map_or("(default)".into(), |n| format!("{n}/min")),
        ),
        ("limits", limits(&k["limits"], "(none)")),
        ("credits", credits(&k["credits"])),
        ("expires_at", opt_time(&k["expires_at"], "never")),
        ("metadata", text(&k["metadata"])),
        ("created_at", opt_time(&k["created_at"], "-")),
        ("updated_at", opt_time(&k["updated_at"], "-")),
        ("usage_count", text(&k["usage_count"])),
        ("last_used", opt_time(&k["last_used"], "never")),
    ];
    if k["previous_expires_at"].is_number() {
        rows.push((
            "previous_secret_until",
            opt_time(&k["previous_expires_at"], "-"),
        ));
    }
    pairs(&rows)
}

pub fn key_list(page: &Value) -> String {
    let items = page["items"].as_array().map_or(&[][..], Vec::as_slice);
    if items.is_empty() {
        return "no keys\n".into();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|k| {
            vec![
                text(&k["key_id"]),
                status(k).to_owned(),
                text(&k["owner"]),
                text(&k["server_name"]),
                list(&k["scopes"], "-"),
                limits(&k["limits"], "-"),
                credits(&k["credits"]),
                opt_time(&k["expires_at"], "never"),
                text(&k["usage_count"]),
                opt_time(&k["last_used"], "never"),
            ]
        })
        .collect();
    let mut out = columns(
        &[
            "KEY ID",
            "STATUS",
            "OWNER",
            "SERVER",
            "SCOPES",
            "LIMITS",
            "CREDITS",
            "EXPIRES",
            "USES",
            "LAST USED",
        ],
        &rows,
    );
    out += &footer(page, "key", "keys", MORE);
    out
}

/// `3 keys`, and `more` when `--limit` stopped the walk before the end.
fn footer(page: &Value, one: &str, many: &str, more: &str) -> String {
    let n = page["items"].as_array().map_or(0, Vec::len);
    let more = if page["next"].is_string() { more } else { "" };
    format!("{n} {}{more}\n", if n == 1 { one } else { many })
}

const MORE: &str = " (stopped at --limit; there are more)";

pub fn project_list(page: &Value) -> String {
    let items = page["items"].as_array().map_or(&[][..], Vec::as_slice);
    if items.is_empty() {
        return "no projects\n".into();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|p| {
            vec![
                text(&p["project_id"]),
                text(&p["label"]),
                text(&p["owner"]),
                opt_time(&p["created_at"], "-"),
            ]
        })
        .collect();
    columns(&["PROJECT ID", "LABEL", "OWNER", "CREATED"], &rows)
        + &footer(page, "project", "projects", MORE)
}

/// An operator's project list: ids, or `*` for every project.
pub fn projects(v: &Value) -> String {
    list(v, "-")
}

/// `revoked`, `expired` or `active`.
fn operator_status(o: &Value) -> &'static str {
    if o["revoked"].as_bool() == Some(true) {
        "revoked"
    } else if o["expires_at"].as_f64().is_some_and(|at| at <= now()) {
        "expired"
    } else {
        "active"
    }
}

pub fn operator_list(page: &Value) -> String {
    let items = page["items"].as_array().map_or(&[][..], Vec::as_slice);
    if items.is_empty() {
        return "no operators\n".into();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|o| {
            vec![
                text(&o["operator_id"]),
                operator_status(o).to_owned(),
                text(&o["role"]),
                projects(&o["projects"]),
                opt_time(&o["expires_at"], "never"),
                text(&o["created_by"]),
                opt_time(&o["created_at"], "-"),
                text(&o["name"]),
            ]
        })
        .collect();
    let header = [
        "OPERATOR ID",
        "STATUS",
        "ROLE",
        "PROJECTS",
        "EXPIRES",
        "CREATED BY",
        "CREATED",
        "NAME",
    ];
    columns(&header, &rows) + &footer(page, "operator", "operators", MORE)
}

/// A new endpoint: its id and its signing secret, a row each.
pub fn webhook_created(w: &Value) -> String {
    pairs(&[
        ("webhook_id", text(&w["webhook_id"])),
        ("secret", text(&w["secret"])),
    ])
}

pub fn webhook_list(page: &Value) -> String {
    let items = page["items"].as_array().map_or(&[][..], Vec::as_slice);
    if items.is_empty() {
        return "no webhooks\n".into();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|w| {
            let status = match w["disabled"].as_bool() {
                Some(true) => "disabled",
                _ => "active",
            };
            vec![
                text(&w["webhook_id"]),
                status.to_owned(),
                text(&w["url"]),
                list(&w["events"], "-"),
                projects(&w["projects"]),
                opt_time(&w["created_at"], "-"),
                text(&w["description"]),
            ]
        })
        .collect();
    let header = [
        "WEBHOOK ID",
        "STATUS",
        "URL",
        "EVENTS",
        "PROJECTS",
        "CREATED",
        "DESCRIPTION",
    ];
    columns(&header, &rows) + &footer(page, "webhook", "webhooks", "")
}

/// An endpoint's delivery attempts, newest first: what became of each
/// (`delivered`, `given up`, or when it is tried again) and the answer
/// (`HTTP 503`) or what went wrong without one.
pub fn deliveries(page: &Value) -> String {
    let items = page["items"].as_array().map_or(&[][..], Vec::as_slice);
    if items.is_empty() {
        return "no deliveries\n".into();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|d| {
            let next = if d["delivered"].as_bool() == Some(true) {
                "delivered".to_owned()
            } else if d["given_up"].as_bool() == Some(true) {
                "given up".to_owned()
            } else {
                opt_time(&d["next_attempt"], "-")
            };
            let result = match (d["status_code"].as_u64(), d["error"].as_str().map(safe)) {
                (Some(code), Some(error)) => format!("HTTP {code}: {error}"),
                (Some(code), None) => format!("HTTP {code}"),
                (None, Some(error)) => error.into_owned(),
                (None, None) => "-".to_owned(),
            };
            vec![
                opt_time(&d["at"], "-"),
                text(&d["message_id"]),
                text(&d["event_type"]),
                text(&d["attempt"]),
                next,
                result,
            ]
        })
        .collect();
    let header = ["TIME", "MESSAGE ID", "EVENT", "ATTEMPT", "NEXT", "RESULT"];
    columns(&header, &rows) + &footer(page, "attempt", "attempts", "")
}

pub fn whoami(me: &Value) -> String {
    pairs(&[
        ("operator_id", text(&me["operator_id"])),
        ("name", text(&me["name"])),
        ("role", text(&me["role"])),
        ("projects", projects(&me["projects"])),
    ])
}

/// The admin trail, newest first; a summary of refused calls shows how
/// many it stands for.
pub fn audit(page: &Value) -> String {
    let items = page["items"].as_array().map_or(&[][..], Vec::as_slice);
    if items.is_empty() {
        return "no entries\n".into();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|e| {
            let mut outcome = text(&e["outcome"]);
            if let Some(count) = e["count"].as_u64().filter(|&c| c > 1) {
                outcome += &format!(" x{count}");
            }
            vec![
                opt_time(&e["ts"], "-"),
                text(&e["actor"]),
                text(&e["action"]),
                text(&e["project_id"]),
                text(&e["key_id"]),
                outcome,
                text(&e["request_id"]),
            ]
        })
        .collect();
    let header = [
        "TIME",
        "ACTOR",
        "ACTION",
        "PROJECT",
        "KEY",
        "OUTCOME",
        "REQUEST ID",
    ];
    columns(&header, &rows)
        + &footer(
            page,
            "entry",
            "entries",
            " (stopped at --limit; older ones may follow)",
        )
}

/// The counts every usage answer has, first in a table or CSV; each
/// denial reason follows, by name.
const USAGE_FIRST: [&str; 3] = ["ok", "rate_limited", "credits_exhausted"];

/// A usage answer's buckets.
fn buckets(answer: &Value) -> &[Value] {
    answer["buckets"].as_array().map_or(&[][..], Vec::as_slice)
}

/// The answers a usage output shows: the one of `keyward usage P [K]`, or
/// each key's of `--each-key` (`{"keys": [answer, ...]}`), which adds a key
/// column.
fn answers(v: &Value) -> (Vec<&Value>, bool) {
    match v["keys"].as_array() {
        Some(keys) => (keys.iter().collect(), true),
        None => (vec![v], false),
    }
}

/// The count names of usage answers: [`USAGE_FIRST`], then every other
/// name any bucket has, sorted.
fn count_names(answers: &[&Value]) -> Vec<String> {
    let mut others: Vec<String> = answers
        .iter()
        .flat_map(|a| buckets(a))
        .filter_map(|b| b["counts"].as_object())
        .flat_map(|counts| counts.keys())
        .filter(|name| !USAGE_FIRST.contains(&name.as_str()))
        .cloned()
        .collect();
    others.sort();
    others.dedup();
    USAGE_FIRST
        .iter()
        .map(|n| n.to_string())
        .chain(others)
        .collect()
}

/// A bucket's count of `name`: 0 when the bucket has none.
fn count(bucket: &Value, name: &str) -> u64 {
    bucket["counts"][name].as_u64().unwrap_or(0)
}

/// A number as JSON wrote it (`12`, `0.5`), or `-`.
fn number(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        _ => "-".into(),
    }
}

/// A bucket's start as people read it, in UTC: `2026-11-01T13:00Z` for an
/// hour, `2026-11-01` for a day, `2026-11` for a month.
fn bucket_start(start: &Value, granularity: &str) -> String {
    let Some(secs) = start.as_i64() else {
        return text(start);
    };
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    match granularity {
        "hour" => format!(
            "{y:04}-{m:02}-{d:02}T{:02}:00Z",
            secs.rem_euclid(86_400) / 3600
        ),
        "month" => format!("{y:04}-{m:02}"),
        _ => format!("{y:04}-{m:02}-{d:02}"),
    }
}

/// `keyward usage`'s table: a row per bucket (its start, the cost, `ok`,
/// and each other count that is not 0 in every bucket), then the total;
/// with `--each-key`, a row per key and bucket, the key first.
pub fn usage(output: &Value, from: i64, to: i64) -> String {
    let (answers, each_key) = answers(output);
    let granularity = output["granularity"].as_str().unwrap_or("day");
    let project = text(&output["project_id"]);
    let whose = match output["key_id"].as_str() {
        Some(key) => format!("key {} of {project}", safe(key)),
        None if each_key => format!("the {} keys of project {project}", answers.len()),
        None => format!("project {project}"),
    };
    let range = format!("{} to {}", time(from as f64), time(to as f64));
    let all: Vec<&Value> = answers.iter().flat_map(|a| buckets(a)).collect();
    if all.is_empty() {
        return format!("no usage of {whose} from {range}\n");
    }
    let shown: Vec<String> = count_names(&answers)
        .into_iter()
        .filter(|name| name == "ok" || all.iter().any(|b| count(b, name) > 0))
        .collect();
    let mut total_cost = 0.0;
    let mut totals = vec![0u64; shown.len()];
    let mut table: Vec<Vec<String>> = Vec::new();
    for answer in &answers {
        for b in buckets(answer) {
            total_cost += b["cost"].as_f64().unwrap_or(0.0);
            let mut row = Vec::new();
            if each_key {
                row.push(text(&answer["key_id"]));
            }
            row.push(bucket_start(&b["start"], granularity));
            row.push(number(&b["cost"]));
            for (name, total) in shown.iter().zip(&mut totals) {
                let n = count(b, name);
                *total += n;
                row.push(n.to_string());
            }
            table.push(row);
        }
    }
    let mut total = vec!["total".to_owned()];
    if each_key {
        total.push(String::new());
    }
    total.push(match total_cost.fract() == 0.0 && total_cost.abs() < 9e15 {
        true => (total_cost as i64).to_string(),
        false => number(&serde_json::json!(total_cost)),
    });
    total.extend(totals.iter().map(u64::to_string));
    table.push(total);
    let mut header: Vec<String> = Vec::new();
    if each_key {
        header.push("KEY ID".into());
    }
    header.extend(["START (UTC)".to_owned(), "COST".to_owned()]);
    header.extend(shown.iter().map(|n| safe(&n.to_uppercase()).into_owned()));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let n = all.len();
    let plural = if n == 1 { "" } else { "s" };
    let whose = match each_key {
        true => {
            let active = answers.iter().filter(|a| !buckets(a).is_empty()).count();
            format!("in {active} of {whose}")
        }
        false => whose,
    };
    columns(&header, &table)
        + &format!("{n} {granularity}{plural} with traffic, {whose}, {range}\n")
}

/// A CSV cell: quoted when it holds a comma, a quote or a line break, and
/// never read as a formula by a spreadsheet (a leading `=`, `+`, `-`, `@`
/// gets a `'`), after [`safe`].
fn csv_cell(s: &str) -> String {
    let s = safe(s);
    let s = match s.chars().next() {
        Some('=' | '+' | '-' | '@') => format!("'{s}"),
        _ => s.into_owned(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// `keyward usage --format csv`: a header (`start`, `start_utc`, `cost`
/// and every count name; `key_id` first with `--each-key`) and a row per
/// bucket, oldest first (key by key).
pub fn usage_csv(output: &Value) -> String {
    let (answers, each_key) = answers(output);
    let names = count_names(&answers);
    let mut header: Vec<String> = Vec::new();
    if each_key {
        header.push("key_id".into());
    }
    header.extend([
        "start".to_owned(),
        "start_utc".to_owned(),
        "cost".to_owned(),
    ]);
    header.extend(names.iter().map(|n| csv_cell(n)));
    let mut out = header.join(",") + "\n";
    for answer in &answers {
        for b in buckets(answer) {
            let mut row = Vec::new();
            if each_key {
                row.push(csv_cell(answer["key_id"].as_str().unwrap_or_default()));
            }
            row.push(csv_cell(&number(&b["start"])));
            row.push(b["start"].as_f64().map(time).unwrap_or_default());
            row.push(csv_cell(&number(&b["cost"])));
            row.extend(names.iter().map(|n| count(b, n).to_string()));
            out += &(row.join(",") + "\n");
        }
    }
    out
}

/// A header name as the gateway documentation spells it.
fn header_name(name: &str) -> String {
    match name {
        "www-authenticate" => "WWW-Authenticate".into(),
        _ => name
            .split('-')
            .map(|word| match word {
                "ratelimit" => "RateLimit".to_owned(),
                _ => {
                    let mut chars = word.chars();
                    chars.next().map_or_else(String::new, |c| {
                        c.to_ascii_uppercase().to_string() + chars.as_str()
                    })
                }
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}

/// Where a header goes in the listing: identity first, as the README lists them.
fn header_rank(name: &str) -> usize {
    const ORDER: [&str; 13] = [
        "x-keyward-project-id",
        "x-keyward-key-id",
        "x-keyward-owner",
        "x-keyward-server-name",
        "x-keyward-scopes",
        "x-keyward-metadata",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-keyward-credits-remaining",
        "x-keyward-failsafe",
        "retry-after",
        "www-authenticate",
    ];
    ORDER.iter().position(|n| *n == name).unwrap_or(ORDER.len())
}

/// `code: message`, or the status alone.
pub fn error_summary(outcome: &Value) -> String {
    let status = outcome["status"].as_u64().unwrap_or_default();
    match outcome["error"]["code"].as_str() {
        Some(code) => format!(
            "HTTP {status} {code}: {}",
            safe(outcome["error"]["message"].as_str().unwrap_or_default())
        ),
        None => format!("HTTP {status}"),
    }
}

pub fn check(outcome: &Value) -> String {
    let valid = outcome["valid"].as_bool() == Some(true);
    let mut out = if valid {
        format!(
            "valid: yes\nA gateway receives HTTP {} and these headers to copy upstream:\n",
            outcome["status"]
        )
    } else {
        format!("valid: no\n{}\n", error_summary(outcome))
    };
    let mut headers: Vec<(&String, &Value)> = outcome["headers"]
        .as_object()
        .map(|h| h.iter().collect())
        .unwrap_or_default();
    headers.sort_by_key(|(name, _)| (header_rank(name), name.as_str()));
    for (name, value) in headers {
        let value = value.as_str().unwrap_or_default();
        out += &format!("  {}: {}\n", safe(&header_name(name)), safe(value));
        if name == "x-keyward-metadata" {
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(value)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            if let Some(json) = decoded {
                out += &format!("    (the metadata, decoded: {})\n", safe(&json));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_print_and_parse_as_utc() {
        assert_eq!(time(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(time(1_800_000_000.7), "2027-01-15T08:00:00Z");
        assert_eq!(time(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(parse_time("1800000000").unwrap(), 1_800_000_000.0);
        assert_eq!(parse_time("2027-01-15T08:00:00Z").unwrap(), 1_800_000_000.0);
        assert_eq!(parse_time("2027-01-15T08:00Z").unwrap(), 1_800_000_000.0);
        assert_eq!(parse_time("2000-02-29").unwrap(), 951_782_400.0);
        for bad in [
            "2027-13-01",
            "2027-01-15T08:00:00",
            "tomorrow",
            "2027-01-15T25:00Z",
            "inf",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("90d").unwrap(), 90.0 * 86_400.0);
        assert_eq!(parse_duration("12h").unwrap(), 43_200.0);
        for bad in ["", "d", "0d", "1y", "-1d", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_key_list_is_a_table_with_one_row_per_key() {
        let page = json!({"items": [
            {"key_id": "k_aaaaaaa1", "owner": "alice", "server_name": "api-1", "scopes": ["chat:*", "files:read"],
             "disabled": false, "expires_at": null, "usage_count": 3, "last_used": 0.0, "previous_expires_at": null},
            {"key_id": "k_bbbbbbb2", "owner": "Zoë", "server_name": "api-2", "scopes": [],
             "disabled": true, "expires_at": 1.0, "usage_count": 0, "last_used": null, "previous_expires_at": null},
        ], "next": null});
        let table = key_list(&page);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("KEY ID      STATUS    OWNER"),
            "{table}"
        );
        assert!(lines[1].contains("k_aaaaaaa1  active    alice"), "{table}");
        assert!(lines[1].contains("chat:*,files:read"), "{table}");
        assert!(lines[2].contains("k_bbbbbbb2  disabled  Zoë"), "{table}");
        assert_eq!(lines[3], "2 keys");
    }

    #[test]
    fn plan_arguments_parse_and_windows_and_credits_print_compactly() {
        let day = parse_limit("day=50000").unwrap();
        assert_eq!((day.per, day.limit), (Per::Day, 50_000));
        assert_eq!(parse_limit("second=1").unwrap().per, Per::Second);
        for bad in [
            "week=5", "day=0", "day=", "day", "=5", "day=-1", "day=1.5", "Day=5",
        ] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
        let refill = parse_refill("month=0").unwrap();
        assert_eq!((refill.interval, refill.amount), (Interval::Month, 0));
        for bad in ["hour=5", "day=-1", "day"] {
            assert!(parse_refill(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_amount("-5").unwrap(), -5);
        for bad in ["0", "-0", "1.5", "-9223372036854775808", "x"] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }

        let windows = json!([{"per": "day", "limit": 50000}, {"per": "second", "limit": 10}]);
        assert_eq!(limits(&windows, "-"), "day=50000 second=10");
        assert_eq!(limits(&json!([]), "(none)"), "(none)");
        let daily = json!({"remaining": 480, "refill": {"interval": "day", "amount": 500}});
        assert_eq!(credits(&daily), "480/500 day");
        assert_eq!(credits(&json!({"remaining": 7, "refill": null})), "7");
        let warned = json!({"remaining": 7, "refill": null, "low_at": 5});
        assert_eq!(credits(&warned), "7 (low at 5)");
        assert_eq!(credits(&Value::Null), "unlimited");
    }

    #[test]
    fn an_audit_summary_shows_how_many_calls_it_stands_for() {
        let page = json!({"items": [
            {"id": "1-0", "ts": 0.0, "actor": "unknown", "action": "key.mint", "project_id": null,
             "key_id": null, "outcome": "unauthorized", "request_id": null, "count": 37},
        ], "next": "1-0"});
        let table = audit(&page);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[1],
            "1970-01-01T00:00:00Z  unknown  key.mint  -        -    unauthorized x37  -"
        );
        assert_eq!(
            lines[2],
            "1 entry (stopped at --limit; older ones may follow)"
        );
    }

    #[test]
    fn webhooks_and_their_deliveries_are_tables() {
        let created = json!({"webhook_id": "wh_aaaaaaaaaaa1", "secret": "whsec_c2VjcmV0", "url": "https://h.example/x"});
        assert_eq!(
            webhook_created(&created),
            "webhook_id  wh_aaaaaaaaaaa1\nsecret      whsec_c2VjcmV0\n"
        );

        let page = json!({"items": [
            {"webhook_id": "wh_aaaaaaaaaaa1", "url": "https://h.example/x", "events": ["*"], "projects": ["alpha", "beta"],
             "description": "billing sync", "created_at": 0.0, "created_by": "root", "disabled": false, "disabled_at": null},
            {"webhook_id": "wh_bbbbbbbbbbb2", "url": "https://h.example/y", "events": ["key.revoked"], "projects": ["*"],
             "description": null, "created_at": 0.0, "created_by": "root", "disabled": true, "disabled_at": 1.0},
        ]});
        let table = webhook_list(&page);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("WEBHOOK ID       STATUS    URL"),
            "{table}"
        );
        assert_eq!(
            lines[1],
            "wh_aaaaaaaaaaa1  active    https://h.example/x  *            alpha,beta  1970-01-01T00:00:00Z  billing sync"
        );
        assert!(
            lines[2].starts_with("wh_bbbbbbbbbbb2  disabled  "),
            "{table}"
        );
        assert!(lines[2].ends_with("  -"), "{table}");
        assert_eq!(lines[3], "2 webhooks");
        assert_eq!(webhook_list(&json!({"items": []})), "no webhooks\n");

        let attempts = json!({"items": [
            {"message_id": "msg_2", "event_type": "webhook.test", "attempt": 2, "at": 0.0, "status_code": 503,
             "error": null, "delivered": false, "next_attempt": null, "given_up": true},
            {"message_id": "msg_1", "event_type": "key.revoked", "attempt": 1, "at": 0.0, "status_code": null,
             "error": "connection failed", "delivered": false, "next_attempt": 5.0, "given_up": false},
            {"message_id": "msg_0", "event_type": "key.created", "attempt": 1, "at": 0.0, "status_code": 204,
             "error": null, "delivered": true, "next_attempt": null, "given_up": false},
        ]});
        let table = deliveries(&attempts);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("TIME  "), "{table}");
        assert!(
            lines[1].ends_with("  2        given up              HTTP 503"),
            "{table}"
        );
        assert!(
            lines[2].ends_with("  1        1970-01-01T00:00:05Z  connection failed"),
            "{table}"
        );
        assert!(
            lines[3].ends_with("  delivered             HTTP 204"),
            "{table}"
        );
        assert_eq!(lines[4], "3 attempts");
        assert_eq!(deliveries(&json!({"items": []})), "no deliveries\n");
    }

    #[test]
    fn usage_is_a_table_of_buckets_with_a_total_and_a_csv_of_every_count() {
        let answer = json!({"project_id": "alpha", "key_id": null, "granularity": "day", "buckets": [
            {"start": 1_796_083_200, "cost": 12, "counts": {"ok": 10, "rate_limited": 0, "credits_exhausted": 0, "bad_secret": 2}},
            {"start": 1_796_169_600, "cost": 3, "counts": {"ok": 3, "rate_limited": 1, "credits_exhausted": 0, "disabled": 0}},
        ]});
        let table = usage(&answer, 1_796_083_200, 1_796_256_000);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0], "START (UTC)  COST  OK  RATE_LIMITED  BAD_SECRET",
            "{table}"
        );
        assert_eq!(
            lines[1], "2026-12-01   12    10  0             2",
            "{table}"
        );
        assert_eq!(
            lines[2], "2026-12-02   3     3   1             0",
            "{table}"
        );
        assert_eq!(
            lines[3], "total        15    13  1             2",
            "{table}"
        );
        assert_eq!(
            lines[4],
            "2 days with traffic, project alpha, 2026-12-01T00:00:00Z to 2026-12-03T00:00:00Z"
        );
        assert_eq!(
            usage_csv(&answer),
            "start,start_utc,cost,ok,rate_limited,credits_exhausted,bad_secret,disabled\n\
             1796083200,2026-12-01T00:00:00Z,12,10,0,0,2,0\n\
             1796169600,2026-12-02T00:00:00Z,3,3,1,0,0,0\n"
        );

        let each = json!({"project_id": "alpha", "key_id": null, "granularity": "day", "keys": [
            {"project_id": "alpha", "key_id": "k_a", "granularity": "day", "buckets": [
                {"start": 1_796_083_200, "cost": 4, "counts": {"ok": 4, "rate_limited": 0, "credits_exhausted": 0}}]},
            {"project_id": "alpha", "key_id": "k_b", "granularity": "day", "buckets": []},
            {"project_id": "alpha", "key_id": "k_c", "granularity": "day", "buckets": [
                {"start": 1_796_083_200, "cost": 1, "counts": {"ok": 1, "rate_limited": 2, "credits_exhausted": 0}}]},
        ]});
        assert_eq!(
            usage(&each, 1_796_083_200, 1_796_169_600),
            "KEY ID  START (UTC)  COST  OK  RATE_LIMITED\n\
             k_a     2026-12-01   4     4   0\n\
             k_c     2026-12-01   1     1   2\n\
             total                5     5   2\n\
             2 days with traffic, in 2 of the 3 keys of project alpha, \
             2026-12-01T00:00:00Z to 2026-12-02T00:00:00Z\n"
        );
        assert_eq!(
            usage_csv(&each),
            "key_id,start,start_utc,cost,ok,rate_limited,credits_exhausted\n\
             k_a,1796083200,2026-12-01T00:00:00Z,4,4,0,0\n\
             k_c,1796083200,2026-12-01T00:00:00Z,1,1,2,0\n"
        );

        let hours = json!({"project_id": "alpha", "key_id": "k_1\u{1b}[2J", "granularity": "hour", "buckets": []});
        assert_eq!(
            usage(&hours, 0, 3600),
            "no usage of key k_1\\u{1b}[2J of alpha from 1970-01-01T00:00:00Z to 1970-01-01T01:00:00Z\n"
        );
        assert_eq!(
            bucket_start(&json!(1_796_133_600), "hour"),
            "2026-12-01T14:00Z"
        );
        assert_eq!(bucket_start(&json!(1_796_083_200), "month"), "2026-12");
        assert_eq!(csv_cell("=cmd|x"), "'=cmd|x");
        assert_eq!(csv_cell("a,\"b\""), "\"a,\"\"b\"\"\"");

        assert_eq!(parse_instant("2026-12-01").unwrap(), 1_796_083_200);
        assert_eq!(parse_instant("1796083200").unwrap(), 1_796_083_200);
        for bad in ["1796083200.5", "-1", "2026-12-32", "yesterday"] {
            assert!(parse_instant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_check_lists_the_headers_a_gateway_gets_identity_first() {
        let outcome = json!({"valid": true, "status": 200, "error": null, "headers": {
            "x-ratelimit-limit": "100", "x-keyward-owner": "Zo%C3%AB", "x-keyward-project-id": "alpha",
            "x-keyward-metadata": "eyJ0aWVyIjoiZ29sZCJ9"}});
        let text = check(&outcome);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "valid: yes");
        assert_eq!(lines[2], "  X-Keyward-Project-Id: alpha");
        assert_eq!(lines[3], "  X-Keyward-Owner: Zo%C3%AB");
        assert_eq!(lines[4], "  X-Keyward-Metadata: eyJ0aWVyIjoiZ29sZCJ9");
        assert_eq!(lines[5], r#"    (the metadata, decoded: {"tier":"gold"})"#);
        assert_eq!(lines[6], "  X-RateLimit-Limit: 100");
    }
}
