//! A table of hostile requests against the real `ferry up` (registry and serving on one port):
//! each gets a 4xx whose message names what was wrong; none gets a 5xx, crashes the process or
//! makes its memory grow without bound.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

/// One hostile request, written byte for byte (so bad UTF-8, bad paths and huge headers reach
/// the server as sent), and what must come back.
struct Case {
    name: &'static str,
    request: Vec<u8>,
    /// The status that must come back (a list only where the standard leaves a choice).
    status: &'static [u16],
    /// Words the answer must contain (any of them, case-insensitive); empty for none.
    says: &'static [&'static str],
}

fn http(method: &str, path: &[u8], headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path);
    // `X-Ferry-Client`: what the server does with the hostile part is under test, not the open
    // mode's form-post rule (tests/security.rs checks that one).
    out.extend_from_slice(
        b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Ferry-Client: test\r\nConnection: close\r\n",
    );
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

fn json(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    http(
        method,
        path.as_bytes(),
        &[("Content-Type", "application/json".into())],
        body,
    )
}

fn infer(body: &[u8]) -> Vec<u8> {
    json("POST", "/v2/models/fraud/infer", body)
}

fn input(datatype: &str, shape: &str, data: &str) -> Vec<u8> {
    format!(
        r#"{{"inputs":[{{"name":"input","datatype":"{datatype}","shape":{shape},"data":{data}}}]}}"#
    )
    .into_bytes()
}

fn floats(n: usize) -> String {
    format!("[{}]", vec!["0.5"; n].join(","))
}

const BOUNDARY: &str = "ferryhostileboundary";

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

/// A length-delimited protobuf field.
fn field(number: u64, payload: &[u8]) -> Vec<u8> {
    [
        varint(number << 3 | 2),
        varint(payload.len() as u64),
        payload.to_vec(),
    ]
    .concat()
}

fn multipart(parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, content_type, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn upload(path: &str, body: &[u8]) -> Vec<u8> {
    http(
        "POST",
        path.as_bytes(),
        &[(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )],
        body,
    )
}

fn cases() -> Vec<Case> {
    let onnx = std::fs::read(fixture("mlp.onnx")).unwrap();
    let deep = format!("{}0.5{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_meta = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    // The binary tensor data extension: a JSON header, then the tensors' bytes.
    let binary_json = r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1,32],"parameters":{"binary_data_size":128}}]}"#;
    let huge_binary = r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1,32],"parameters":{"binary_data_size":18446744073709551616}}]}"#;
    // ONNX that would cost far more than its size to take in: a graph declaring 1 TiB, and If
    // nodes nested 200 deep (each then-branch holding the next).
    let tera_graph: Vec<u8> = [&[0x3a_u8][..], &varint(1 << 40), b"tiny"].concat();
    let mut nested: Vec<u8> = Vec::new();
    for _ in 0..200 {
        let attribute = [field(1, b"then_branch"), field(6, &field(1, &nested))].concat();
        nested = [field(4, b"If"), field(5, &attribute)].concat();
    }
    let nested_model = field(7, &field(1, &nested));
    let json_head = |length: &str| -> Vec<u8> {
        format!(
            "POST /v2/models/fraud/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n{length}\r\n"
        )
        .into_bytes()
    };
    let mut out = vec![
        // --- Broken HTTP/1 and lying lengths, on the wire.
        Case { name: "a request line that is not HTTP", request: b"GARBAGE\r\n\r\n".to_vec(), status: &[400], says: &[] },
        Case { name: "a header line without a colon", request: b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nbroken header\r\n\r\n".to_vec(), status: &[400], says: &[] },
        Case { name: "two Content-Lengths that disagree", request: [json_head("Content-Length: 5\r\nContent-Length: 7\r\n"), b"{}".to_vec()].concat(), status: &[400], says: &[] },
        Case { name: "a Content-Length past the body sent", request: [json_head("Content-Length: 100000\r\n"), input("FP32", "[1,32]", &floats(32))].concat(), status: &[408], says: &["body", "arrive"] },
        Case { name: "a Content-Length short of the body sent", request: [json_head("Content-Length: 10\r\n"), input("FP32", "[1,32]", &floats(32))].concat(), status: &[400], says: &["json", "eof", "expected"] },
        Case { name: "an ONNX graph declaring 1 TiB", request: upload("/api/v1/models/fraud/versions", &multipart(&[("model", "application/octet-stream", &tera_graph)])), status: &[422], says: &["onnx", "truncated", "end"] },
        Case { name: "ONNX subgraphs nested 200 deep", request: upload("/api/v1/models/fraud/versions", &multipart(&[("model", "application/octet-stream", &nested_model)])), status: &[422], says: &["nested"] },
        // --- Serving: the OIP decoder and validator on the wire.
        Case { name: "body over --max-request-size", request: infer(&input("FP32", "[1,32]", &floats(400_000))), status: &[413], says: &["large", "limit"] },
        Case { name: "JSON nested 100,000 deep", request: infer(format!(r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[1,32],"data":{deep}}}]}}"#).as_bytes()), status: &[400], says: &["deep", "nest", "recursion"] },
        Case { name: "shape whose product overflows", request: infer(&input("FP32", "[4294967296,4294967296,4294967296]", "[0.5]")), status: &[400], says: &["shape", "element"] },
        Case { name: "negative dimension", request: infer(&input("FP32", "[-1,32]", &floats(32))), status: &[400], says: &["shape", "dim", "negative", "invalid"] },
        Case { name: "zero-width rows against 32 features", request: infer(&input("FP32", "[1,0]", "[]")), status: &[400], says: &["shape", "32"] },
        Case { name: "NaN as a bare word", request: infer(&input("FP32", "[1,1]", "[NaN]")), status: &[400], says: &["json", "expected", "invalid"] },
        Case { name: "number past f64 (1e999)", request: infer(&input("FP32", "[1,32]", &format!("[1e999,{}]", vec!["0"; 31].join(",")))), status: &[400], says: &["number", "range", "finite", "invalid"] },
        Case { name: "strings where floats belong", request: infer(&input("FP32", "[1,2]", r#"["NaN","Infinity"]"#)), status: &[400], says: &["input", "fp32", "number"] },
        Case { name: "unknown datatype", request: infer(&input("FP16X", "[1,32]", &floats(32))), status: &[400], says: &["datatype"] },
        Case { name: "datatype other than the model's", request: infer(&input("INT64", "[1,32]", &format!("[{}]", vec!["1"; 32].join(",")))), status: &[400], says: &["input", "fp32", "int64"] },
        Case { name: "element count not matching the shape", request: infer(&input("FP32", "[2,32]", &floats(32))), status: &[400], says: &["input", "64", "32"] },
        Case { name: "the same input twice", request: infer(format!(r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[1,32],"data":{f}}},{{"name":"input","datatype":"FP32","shape":[1,32],"data":{f}}}]}}"#, f = floats(32)).as_bytes()), status: &[400], says: &["input", "twice", "duplicate", "more than once"] },
        Case { name: "an input the model does not have", request: infer(format!(r#"{{"inputs":[{{"name":"../../etc/passwd","datatype":"FP32","shape":[1,32],"data":{f}}}]}}"#, f = floats(32)).as_bytes()), status: &[400], says: &["input"] },
        Case { name: "invalid UTF-8 in the body", request: infer(b"{\"inputs\":[{\"name\":\"in\xff\xfe\",\"datatype\":\"FP32\"}]}"), status: &[400], says: &["utf-8", "utf8", "invalid"] },
        Case { name: "empty body", request: infer(b""), status: &[400], says: &["json", "empty", "eof"] },
        Case { name: "inputs is not a list", request: infer(br#"{"inputs":{"name":"input"}}"#), status: &[400], says: &["inputs", "sequence", "array", "list"] },
        Case { name: "900 KB string where a number belongs", request: infer(&input("FP32", "[1,1]", &format!("[\"{}\"]", "9".repeat(900_000)))), status: &[400], says: &["input", "fp32", "number"] },
        Case { name: "10,000 inputs", request: infer(format!(r#"{{"inputs":[{}]}}"#, vec![r#"{"name":"x","datatype":"FP32","shape":[1],"data":[1]}"#; 10_000].join(",")).as_bytes()), status: &[400], says: &["input"] },
        Case { name: "binary header that is not a number", request: http("POST", b"/v2/models/fraud/infer", &[("Inference-Header-Content-Length", "12abc".into())], b"{}"), status: &[400], says: &["inference-header-content-length must be a number"] },
        Case { name: "binary header past the body", request: http("POST", b"/v2/models/fraud/infer", &[("Inference-Header-Content-Length", "99999999999".into())], b"{}"), status: &[400], says: &["inference-header-content-length is 99999999999 but the body has only 2 bytes"] },
        Case { name: "binary data shorter than declared", request: http("POST", b"/v2/models/fraud/infer", &[("Inference-Header-Content-Length", binary_json.len().to_string())], &[binary_json.as_bytes(), &[0u8; 10]].concat()), status: &[400], says: &["is 128 but only 10 bytes of binary data are left"] },
        Case { name: "binary size of 2^64", request: http("POST", b"/v2/models/fraud/infer", &[("Inference-Header-Content-Length", huge_binary.len().to_string())], huge_binary.as_bytes()), status: &[400], says: &["must be a non-negative integer"] },
        Case { name: "form data where JSON belongs", request: http("POST", b"/v2/models/fraud/infer", &[("Content-Type", "multipart/form-data; boundary=x".into())], b"--x--"), status: &[400], says: &["json", "content-type", "expected"] },
        Case { name: "model name with a path traversal", request: infer_at(b"/v2/models/..%2F..%2Fetc%2Fpasswd/infer"), status: &[404], says: &["model", "not", "name"] },
        Case { name: "model name with a right-to-left override", request: infer_at("/v2/models/fr%E2%80%AEaud/infer".as_bytes()), status: &[404], says: &["model", "not", "name"] },
        Case { name: "model name with a NUL byte", request: infer_at(b"/v2/models/fraud%00/infer"), status: &[404], says: &["model", "not", "name"] },
        Case { name: "model name of invalid UTF-8", request: infer_at(b"/v2/models/fr%FF%FEaud/infer"), status: &[400], says: &["{\"error\":\"invalid path: invalid url: invalid utf-8"] },
        Case { name: "version that is not a number", request: infer_at(b"/v2/models/fraud/versions/99999999999999999999999/infer"), status: &[404], says: &["version"] },
        Case { name: "header of 1 MiB", request: http("GET", b"/v2/models/fraud", &[("X-Big", "a".repeat(1 << 20))], b""), status: &[431], says: &[] },
        Case { name: "500 headers", request: http("GET", b"/v2/models/fraud", &(0..500).map(|i| ("X-Many", format!("{i}"))).collect::<Vec<_>>(), b""), status: &[431], says: &[] },
        // --- Registry: uploads.
        Case { name: "upload that is not ONNX", request: upload("/api/v1/models/fraud/versions", &multipart(&[("model", "application/octet-stream", b"this is not a model")])), status: &[422], says: &["onnx"] },
        Case { name: "upload of a truncated ONNX file", request: upload("/api/v1/models/fraud/versions", &multipart(&[("model", "application/octet-stream", &onnx[..onnx.len() / 2])])), status: &[422], says: &["onnx", "truncated", "end"] },
        Case { name: "upload over --max-upload-size", request: upload("/api/v1/models/fraud/versions", &multipart(&[("model", "application/octet-stream", &vec![0u8; 3 << 20])])), status: &[413], says: &["large", "limit", "size"] },
        Case { name: "upload without the model part", request: upload("/api/v1/models/fraud/versions", &multipart(&[("metadata", "application/json", b"{}")])), status: &[400], says: &["model"] },
        Case { name: "metadata that is not JSON", request: upload("/api/v1/models/fraud/versions", &multipart(&[("metadata", "application/json", b"{not json"), ("model", "application/octet-stream", &onnx)])), status: &[400], says: &["metadata"] },
        Case { name: "metadata nested 10,000 deep", request: upload("/api/v1/models/fraud/versions", &multipart(&[("metadata", "application/json", format!(r#"{{"params":{deep_meta}}}"#).as_bytes()), ("model", "application/octet-stream", &onnx)])), status: &[400], says: &["metadata"] },
        Case { name: "multipart without a boundary", request: http("POST", b"/api/v1/models/fraud/versions", &[("Content-Type", "multipart/form-data".into())], b"garbage"), status: &[415], says: &["multipart", "boundary"] },
        Case { name: "upload as JSON", request: json("POST", "/api/v1/models/fraud/versions", b"{}"), status: &[415], says: &["multipart"] },
        Case { name: "model name with a path traversal (upload)", request: upload("/api/v1/models/..%2F..%2Fetc/versions", &multipart(&[("model", "application/octet-stream", &onnx)])), status: &[400], says: &["name"] },
        Case { name: "model name with a right-to-left override (upload)", request: upload("/api/v1/models/fr%E2%80%AEaud/versions", &multipart(&[("model", "application/octet-stream", &onnx)])), status: &[400], says: &["name"] },
        Case { name: "model name of 10,000 characters", request: upload(&format!("/api/v1/models/{}/versions", "a".repeat(10_000)), &multipart(&[("model", "application/octet-stream", &onnx)])), status: &[400], says: &["name", "10000 bytes"] },
        // --- Registry: JSON routes.
        Case { name: "alias to a version past i64", request: json("PUT", "/api/v1/models/fraud/aliases/prod", br#"{"version": 1e30}"#), status: &[400], says: &["version"] },
        Case { name: "alias to a negative version", request: json("PUT", "/api/v1/models/fraud/aliases/prod", br#"{"version": -1}"#), status: &[400], says: &["version"] },
        Case { name: "alias named with digits only", request: json("PUT", "/api/v1/models/fraud/aliases/123", br#"{"version": 1}"#), status: &[400], says: &["alias"] },
        Case { name: "endpoint with a canary weight of 5", request: json("PUT", "/api/v1/endpoints/hostile", br#"{"model":"fraud","stable":1,"canary":{"version":1,"weight":5}}"#), status: &[400], says: &["weight"] },
        Case { name: "endpoint with 10,000 shadows", request: json("PUT", "/api/v1/endpoints/hostile", format!(r#"{{"model":"fraud","stable":1,"shadows":[{}]}}"#, vec![r#"{"version":1,"sample_rate":1}"#; 10_000].join(",")).as_bytes()), status: &[400], says: &["at most 16 shadows"] },
        Case { name: "endpoint policy as text/plain", request: http("PUT", b"/api/v1/endpoints/hostile", &[("Content-Type", "text/plain".into())], br#"{"model":"fraud","stable":1}"#), status: &[415], says: &["content-type", "json"] },
        Case { name: "endpoint policy of 5 MB", request: json("PUT", "/api/v1/endpoints/hostile", format!(r#"{{"model":"fraud","stable":1,"sticky_header":"{}"}}"#, "x".repeat(5 << 20)).as_bytes()), status: &[413], says: &["large", "limit"] },
        Case { name: "events with limit=-1", request: http("GET", b"/api/v1/events?limit=-1", &[], b""), status: &[400], says: &["limit"] },
        Case { name: "events after a word", request: http("GET", b"/api/v1/events?after=abc", &[], b""), status: &[400], says: &["after"] },
        Case { name: "analysis over 99999 hours", request: http("GET", b"/api/v1/endpoints/hostile/analysis?window=99999h", &[], b""), status: &[400], says: &["window"] },
        Case { name: "artifact of a version that is a path", request: http("GET", b"/api/v1/models/fraud/versions/..%2F..%2F..%2Fetc%2Fpasswd/artifact", &[], b""), status: &[400], says: &["version"] },
        Case { name: "range past the end", request: http("GET", b"/api/v1/models/fraud/versions/1/artifact", &[("Range", "bytes=999999999-".into())], b""), status: &[416], says: &[] },
        // A Range the server cannot parse is ignored (RFC 9110 §14.2): the whole artifact.
        Case { name: "range with overflowing numbers", request: http("GET", b"/api/v1/models/fraud/versions/1/artifact", &[("Range", "bytes=0-99999999999999999999999999".into())], b""), status: &[200], says: &[] },
        Case { name: "feedback for a prediction never made", request: json("POST", "/v2/models/fraud/feedback", br#"{"id":"../../x","reward":1}"#), status: &[404], says: &["prediction", "id"] },
        Case { name: "feedback with reward 1e999", request: json("POST", "/v2/models/fraud/feedback", br#"{"id":"x","reward":1e999}"#), status: &[400], says: &["reward", "number", "json"] },
    ];
    out.retain(|c| !c.name.is_empty());
    out
}

fn infer_at(path: &[u8]) -> Vec<u8> {
    http(
        "POST",
        path,
        &[("Content-Type", "application/json".into())],
        &input("FP32", "[1,32]", &floats(32)),
    )
}

/// Sends raw bytes and returns the status and body of the answer (the status 0 when the
/// connection was closed without one).
fn exchange(port: u16, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The server may answer (and close) before it has read everything: that is allowed.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn every_hostile_request_gets_a_clear_4xx_and_the_server_stays_healthy() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("mlp.onnx");
    let server = Server::start(
        dir.path(),
        &[
            "up",
            "--no-demo",
            "--max-request-size",
            "1MiB",
            "--max-upload-size",
            "2MiB",
        ],
    );
    let out = ferry(
        dir.path(),
        &["model", "push", model.to_str().unwrap(), "--name", "fraud"],
        &[("FERRY_REGISTRY", &server.url())],
    );
    assert!(out.status.success(), "{}", text(&out));
    // `ferry up` serves every model: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while exchange(
        server.port,
        &http("GET", b"/v2/models/fraud/ready", &[], b""),
    )
    .0 != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "fraud was never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_before = peak_rss_kib(server.pid());

    let mut wrong = Vec::new();
    for case in cases() {
        let (status, body) = exchange(server.port, &case.request);
        let lower = body.to_lowercase();
        if !case.status.contains(&status) {
            wrong.push(format!(
                "{}: got {status} (want {:?}): {}",
                case.name,
                case.status,
                body.chars().take(300).collect::<String>()
            ));
        } else if !case.says.is_empty() && !case.says.iter().any(|w| lower.contains(w)) {
            wrong.push(format!(
                "{}: the {status} does not say what was wrong (any of {:?}): {}",
                case.name,
                case.says,
                body.chars().take(300).collect::<String>()
            ));
        }
        // Still alive and answering after each one.
        let (health, _) = exchange(server.port, &http("GET", b"/v2/health/live", &[], b""));
        assert_eq!(
            health, 200,
            "the server stopped answering after {}",
            case.name
        );
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // A real request still works, and the process did not keep what the hostile ones sent.
    let (status, body) = exchange(server.port, &infer(&input("FP32", "[1,32]", &floats(32))));
    assert_eq!(status, 200, "{body}");
    let grown = peak_rss_kib(server.pid()).saturating_sub(rss_before);
    assert!(
        grown < 256 * 1024,
        "the peak RSS grew by {grown} KiB during the hostile requests"
    );
    assert!(
        !server.logs().contains("panicked"),
        "a handler panicked:\n{}",
        server.logs()
    );
}
