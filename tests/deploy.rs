//! The container and the manifests in deploy/ against the real binary: their ports,
//! protocols, health paths and command lines are what `dissonance serve` accepts. Each
//! manifest's command line is run (on 127.0.0.1, free ports) and its health paths are
//! fetched over HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_yaml::Value;

mod scrape;
use scrape::http_get;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap()
}

/// All documents of a YAML file.
fn yaml_docs(path: &str) -> Vec<Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The port of `--flag HOST:PORT` in serve arguments.
fn flag_port(args: &[String], flag: &str) -> u64 {
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args[at + 1].rsplit(':').next().unwrap().parse().unwrap()
}

/// serve running with `args`, its addresses moved to 127.0.0.1 with free ports (the
/// manifests listen on 0.0.0.0 and fixed ports); killed on drop.
struct Running {
    child: Child,
    /// `http://127.0.0.1:PORT` of --metrics.
    base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_serve(args: &[String]) -> Running {
    let local: Vec<String> = args
        .iter()
        .map(|a| match a.strip_prefix("0.0.0.0:") {
            Some(_) => "127.0.0.1:0".to_string(),
            None => a.clone(),
        })
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .arg("serve")
        .args(&local)
        .current_dir(ROOT)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let base = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("serve {local:?} did not start"));
        if let Some(url) = line.strip_prefix("metrics on ") {
            break url.strip_suffix("/metrics").unwrap().to_string();
        }
    };
    Running { child, base }
}

#[test]
fn dockerfile_builds_where_a_docker_engine_runs() {
    let text = read("Dockerfile");
    let json_list = |prefix: &str| -> Vec<String> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix}"));
        serde_json::from_str(line.trim()).unwrap()
    };
    assert_eq!(json_list("ENTRYPOINT "), ["dissonance", "serve"]);
    let cmd = json_list("CMD ");
    let expose = text
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .unwrap();
    let expose: Vec<&str> = expose.split_whitespace().collect();
    assert_eq!(
        expose,
        [
            format!("{}/udp", flag_port(&cmd, "--listen")),
            format!("{}/tcp", flag_port(&cmd, "--metrics"))
        ]
    );
    // Runtime stage: only the two shared libraries, and not root.
    let runtime = &text[text.rfind("\nFROM ").unwrap()..];
    assert!(
        runtime.starts_with("\nFROM debian:bookworm-slim\n"),
        "{runtime}"
    );
    assert!(runtime.contains("--no-install-recommends libpcap0.8 libopus0 \\\n"));
    assert!(runtime.contains("\nUSER 10001\n"));
    // The default command line works and is healthy.
    let s = run_serve(&cmd);
    assert_eq!(http_get(&format!("{}/healthz", s.base), None).0, 200);
    drop(s);

    match Command::new("docker").arg("info").output() {
        Ok(o) if o.status.success() => {
            let out = Command::new("docker")
                .args(["build", "--quiet", "-t", "dissonance-test", ROOT])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "docker build: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("docker build: the image builds");
        }
        Ok(o) => eprintln!(
            "docker build SKIPPED: no docker engine runs here (docker info: {})",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("docker build SKIPPED: no docker command here ({e})"),
    }
}

#[test]
fn kubernetes_manifests_match_what_serve_accepts() {
    let docs = yaml_docs("deploy/kubernetes.yaml");
    let kind = |k: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == k).collect() };
    let deploy = kind("Deployment")[0];
    assert_eq!(deploy["spec"]["replicas"], 1);
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args = strs(&c["args"]);
    let port = |name: &str| -> &Value {
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
    };
    assert_eq!(port("voice")["protocol"], "UDP");
    assert_eq!(port("voice")["containerPort"], flag_port(&args, "--listen"));
    assert_eq!(port("metrics")["protocol"], "TCP");
    assert_eq!(
        port("metrics")["containerPort"],
        flag_port(&args, "--metrics")
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
    // The drain fits in the grace period.
    let drain = &args[args.iter().position(|a| a == "--drain").unwrap() + 1];
    let drain: u64 = drain.trim_end_matches('s').parse().unwrap();
    assert!(drain < pod["terminationGracePeriodSeconds"].as_u64().unwrap());

    let services = kind("Service");
    let voice = services
        .iter()
        .find(|s| s["spec"]["type"] == "LoadBalancer")
        .unwrap();
    let vp = &voice["spec"]["ports"][0];
    assert_eq!(vp["protocol"], "UDP");
    assert_eq!(vp["targetPort"], "voice");
    assert_eq!(
        voice["spec"]["selector"],
        deploy["spec"]["selector"]["matchLabels"]
    );

    let s = run_serve(&args);
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = c[probe]["httpGet"]["path"].as_str().unwrap();
        assert_eq!(
            http_get(&format!("{}{path}", s.base), None).0,
            200,
            "{probe}"
        );
    }
}

#[test]
fn agones_fleet_matches_what_serve_accepts() {
    let docs = yaml_docs("deploy/fleet.yaml");
    assert_eq!(docs.len(), 1);
    let fleet = &docs[0];
    assert_eq!(fleet["apiVersion"], "agones.dev/v1");
    assert_eq!(fleet["kind"], "Fleet");
    let gs = &fleet["spec"]["template"]["spec"];
    let containers = gs["template"]["spec"]["containers"].as_sequence().unwrap();
    let by_name = |n: &str| containers.iter().find(|c| c["name"] == n).unwrap();
    let serve = by_name("serve");
    let args = strs(&serve["args"]);
    let p = &gs["ports"][0];
    assert_eq!(p["protocol"], "UDP");
    assert_eq!(p["portPolicy"], "Dynamic");
    assert_eq!(p["container"], "serve");
    assert_eq!(p["containerPort"], flag_port(&args, "--listen"));
    assert!(gs["health"]["periodSeconds"].as_u64().unwrap() > 0);

    // The bridge polls serve's health paths on its --metrics port.
    let bridge = by_name("agones-bridge");
    let env = |n: &str| -> String {
        bridge["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let metrics_port = flag_port(&args, "--metrics");
    let s = run_serve(&args);
    for (var, path) in [("HEALTH_URL", "/healthz"), ("READY_URL", "/readyz")] {
        let url = env(var);
        assert_eq!(
            url,
            format!("http://127.0.0.1:{metrics_port}{path}"),
            "{var}"
        );
        assert_eq!(http_get(&format!("{}{path}", s.base), None).0, 200, "{var}");
    }
    let script = strs(&bridge["command"]).join("\n");
    for needed in [
        "$READY_URL",
        "$HEALTH_URL",
        "post ready",
        "post health",
        "AGONES_SDK_HTTP_PORT",
    ] {
        assert!(script.contains(needed), "{needed}: {script}");
    }
}

#[test]
fn the_example_config_runs_and_the_command_line_overrides_it() {
    // The file listens on 0.0.0.0:47200 and logs NDJSON; the command line moves the
    // addresses to free ports on 127.0.0.1.
    let mut child = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(["serve", "--config", "deploy/serve.toml"])
        .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .current_dir(ROOT)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut first = String::new();
    BufReader::new(out).read_line(&mut first).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&first).expect("NDJSON from the file");
    assert_eq!(v["event"], "listening");
    assert!(v["addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{v}");
}
