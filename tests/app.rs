//! `cbase::app`: the program every service gets from one line. Its pieces
//! run here in process: the command line, `call`'s JSON both ways, and
//! `status` against a running local cluster.
#![cfg(feature = "cli")]

use cbase::app::{self, AppError, CallArgs, StatusArgs};
use cbase::prelude::*;

/// A ticket counter: enough kinds of argument to read from JSON.
#[cbase::service]
pub trait Counter {
    /// Adds `by` to `name`; the new count.
    #[writes(counts[name])]
    fn add(&self, name: String, by: u64) -> u64;

    /// The count of `name`.
    #[reads(counts[name])]
    fn get(&self, name: String) -> Option<u64>;

    /// Adds each `(name, by)`; refuses an empty list.
    #[writes(counts[*])]
    fn add_all(&self, adds: Vec<(String, u64)>, ctx: &Context) -> Result<u64, String>;

    /// How many names are counted.
    #[reads(counts[*])]
    fn names(&self) -> u64;
}

#[derive(Default, cbase::State)]
pub struct Counts {
    counts: Table<String, u64>,
}

impl Counter for Counts {
    fn add(&self, name: String, by: u64) -> u64 {
        self.counts.upsert(
            name,
            || 0,
            |n| {
                *n += by;
                *n
            },
        )
    }

    fn get(&self, name: String) -> Option<u64> {
        self.counts.get(&name)
    }

    fn add_all(&self, adds: Vec<(String, u64)>, _ctx: &Context) -> Result<u64, String> {
        if adds.is_empty() {
            return Err("nothing to add".into());
        }
        Ok(adds.into_iter().map(|(name, by)| self.add(name, by)).sum())
    }

    fn names(&self) -> u64 {
        self.counts.len() as u64
    }
}

fn request(method: &str, arguments: Option<&str>) -> Result<CounterRequest, AppError> {
    app::request_from_json::<CounterRequest>(method, arguments)
}

#[test]
fn the_macro_lists_every_method_with_its_arguments() {
    let methods: Vec<String> = CounterRequest::methods()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        methods,
        [
            "add(name: String, by: u64)",
            "get(name: String)",
            // The context is not an argument a caller gives.
            "add_all(adds: Vec<(String, u64)>)",
            "names()",
        ]
    );
}

#[test]
fn arguments_come_by_name_in_order_or_bare() {
    let by_name = request("add", Some(r#"{"name": "visits", "by": 2}"#)).unwrap();
    assert!(matches!(by_name, CounterRequest::Add { ref name, by: 2 } if name == "visits"));
    let in_order = request("add", Some(r#"["visits", 2]"#)).unwrap();
    assert!(matches!(in_order, CounterRequest::Add { ref name, by: 2 } if name == "visits"));
    let bare = request("get", Some(r#""visits""#)).unwrap();
    assert!(matches!(bare, CounterRequest::Get { ref name } if name == "visits"));
    let nested = request("add_all", Some(r#"[[["a", 1], ["b", 2]]]"#)).unwrap();
    assert!(matches!(nested, CounterRequest::AddAll { ref adds } if adds.len() == 2));
    assert!(matches!(
        request("names", None).unwrap(),
        CounterRequest::Names {}
    ));
    assert!(matches!(
        request("names", Some("{}")).unwrap(),
        CounterRequest::Names {}
    ));
}

#[test]
fn a_wrong_call_says_what_the_service_takes() {
    let unknown = request("ad", Some("{}")).unwrap_err().to_string();
    assert!(unknown.contains("no method `ad`"), "{unknown}");
    assert!(unknown.contains("add(name: String, by: u64)"), "{unknown}");
    assert!(unknown.contains("names()"), "{unknown}");

    let missing = request("add", Some(r#"{"name": "visits"}"#))
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("add(name: String, by: u64)") && missing.contains("missing field `by`"),
        "{missing}"
    );
    let mistyped = request("add", Some(r#"{"name": "visits", "by": "two"}"#))
        .unwrap_err()
        .to_string();
    assert!(mistyped.contains("invalid type"), "{mistyped}");
    let none = request("add", None).unwrap_err().to_string();
    assert!(none.contains("none given"), "{none}");
    let not_json = request("add", Some("{name: visits}"))
        .unwrap_err()
        .to_string();
    assert!(not_json.contains("not JSON"), "{not_json}");
    let too_few = request("add", Some(r#"["visits"]"#))
        .unwrap_err()
        .to_string();
    assert!(
        too_few.contains("takes 2 argument(s), 1 given"),
        "{too_few}"
    );
    let bare_for_two = request("add", Some("3")).unwrap_err().to_string();
    assert!(
        bare_for_two.contains("object by argument name"),
        "{bare_for_two}"
    );
}

#[test]
fn replies_print_as_the_method_returns_them() {
    assert_eq!(app::reply_to_json(&CounterResponse::Add(3)), "3");
    assert_eq!(app::reply_to_json(&CounterResponse::Get(None)), "null");
    assert_eq!(
        app::reply_to_json(&CounterResponse::AddAll(Err("nothing to add".into()))),
        "{\n  \"Err\": \"nothing to add\"\n}"
    );
}

#[test]
fn the_command_line_reads_as_documented() {
    let command = app::command::<CounterService<Counts>>();
    command.clone().debug_assert();
    let help = command
        .clone()
        .find_subcommand_mut("call")
        .expect("a call command")
        .render_long_help()
        .to_string();
    assert!(help.contains("add_all(adds: Vec<(String, u64)>)"), "{help}");
    let parsed = command
        .try_get_matches_from(["counter", "replica", "--config", "c.toml", "--id", "2"])
        .unwrap_err();
    assert!(parsed.to_string().contains("--key"), "{parsed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_and_status_against_a_running_cluster() {
    let cluster = LocalCluster::builder()
        .replicas(4)
        .workers(2)
        .start(|| CounterService(Counts::default()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, cluster.config().to_toml()).unwrap();

    let call = |method: &str, arguments: &str| CallArgs {
        method: method.into(),
        arguments: Some(arguments.into()),
        config: config.clone(),
        key: None,
        timeout: 60,
    };
    let added = app::call::<CounterService<Counts>>(&call("add", r#"["visits", 5]"#))
        .await
        .unwrap();
    assert_eq!(added, "5");
    let got = app::call::<CounterService<Counts>>(&call("get", r#""visits""#))
        .await
        .unwrap();
    assert_eq!(got, "5");

    let (table, quorum) = app::status(&StatusArgs {
        config: config.clone(),
        key: None,
        wait: 10,
    })
    .await
    .unwrap();
    quorum.unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines.len(),
        5,
        "a header and one line per replica:\n{table}"
    );
    assert!(lines[0].starts_with("replica"), "{table}");
    for (id, line) in lines[1..].iter().enumerate() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], id.to_string(), "{table}");
        assert_eq!(cells[2], "0", "every replica in view 0:\n{table}");
        assert_eq!(
            cells[3], "no",
            "a first start recovers from nothing:\n{table}"
        );
    }

    // One replica down: it says so, and 3 of 4 still make a quorum.
    let mut cluster = cluster;
    cluster.stop_replica(3).await;
    let (table, quorum) = app::status(&StatusArgs {
        config,
        key: None,
        wait: 2,
    })
    .await
    .unwrap();
    quorum.unwrap();
    assert!(table.contains("replica 3: unreachable"), "{table}");
    cluster.shutdown().await;
}
