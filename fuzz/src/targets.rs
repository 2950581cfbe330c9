//! The targets: every parser and validator that reads bytes from outside.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ferry_api::drift::{Profile, ProfileOptions, profile_csv};
use ferry_api::http::metrics::HttpMetrics;
use ferry_api::onnx::{ModelSignature, OnnxScanner, inspect};
use ferry_api::records::EndpointPolicy;
use ferry_api::traffic::validate_policy;
use ferry_registry::api::multipart::{Event, Parser};
use ferry_registry::{AppState, BlobStore, Config, MetadataStore};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use crate::{Outcome, Rng, Target, outcome_of};

/// The repository's `tests/fixtures/`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap_or_default()
}

/// Every target, by name.
pub fn all() -> Vec<Box<dyn Target>> {
    vec![
        Box::new(Oip::new()),
        Box::new(Grpc(Oip::new())),
        Box::new(Onnx),
        Box::new(Policy),
        Box::new(ProfileTarget),
        Box::new(Upload::new()),
        Box::new(Multipart),
    ]
}

// ---------------------------------------------------------------------------------------------

/// The OIP infer request decoder and validator, against the signatures of the fixture models.
/// Invariant: an accepted request has one tensor per model input, each with as many elements
/// as its shape says.
pub struct Oip {
    signatures: Vec<ModelSignature>,
}

impl Oip {
    /// Reads the fixtures' signatures.
    pub fn new() -> Self {
        let signatures = [
            "mlp.onnx",
            "two_inputs.onnx",
            "int64.onnx",
            "fixed_shape.onnx",
            "strings.onnx",
            "half.onnx",
        ]
        .iter()
        .filter_map(|f| inspect(&fixture(f)).ok())
        .collect();
        Oip { signatures }
    }
}

impl Default for Oip {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for Oip {
    fn name(&self) -> &'static str {
        "oip"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut seeds = vec![fixture("mlp-request.json")];
        for (i, signature) in self.signatures.iter().enumerate() {
            let inputs: Vec<String> = signature
                .inputs
                .iter()
                .map(|input| {
                    format!(
                        r#"{{"name":"{}","datatype":"{}","shape":[2,3],"data":[[1,2,3],[4,5,6]]}}"#,
                        input.name, input.datatype
                    )
                })
                .collect();
            let mut seed = vec![u8::try_from(i).unwrap_or(0)];
            seed.extend_from_slice(
                format!(
                    r#"{{"id":"s","inputs":[{}],"outputs":[{{"name":"x"}}],"parameters":{{"a":1}}}}"#,
                    inputs.join(",")
                )
                .as_bytes(),
            );
            seeds.push(seed);
        }
        // The binary form: the same inputs as 4-byte elements after the JSON.
        let mlp_binary = r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1,32],"parameters":{"binary_data_size":128}}],"parameters":{"binary_data_output":true}}"#;
        let mut seed = vec![0];
        seed.extend_from_slice(mlp_binary.as_bytes());
        seed.extend(std::iter::repeat_n(0x3f, 128));
        seeds.push(seed);
        seeds
    }

    fn dictionary(&self) -> &'static [&'static [u8]] {
        &[
            br#""inputs""#,
            br#""outputs""#,
            br#""shape""#,
            br#""datatype""#,
            br#""data""#,
            br#""name""#,
            br#""parameters""#,
            br#""binary_data_size""#,
            br#""binary_data_output""#,
            br#""binary_data""#,
            br#""id""#,
            br#""FP32""#,
            br#""FP64""#,
            br#""INT64""#,
            br#""BYTES""#,
            br#""BOOL""#,
            br#""FP16""#,
            br#""UINT8""#,
            b"null",
            b"true",
            b"[[",
            b"]]",
            b"\\u0000",
            b"\\ud800",
        ]
    }

    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        // The first byte picks the model when it is not part of the JSON.
        let (signature, body) = match input.split_first() {
            Some((&b, rest)) if b < 32 && !self.signatures.is_empty() => (
                &self.signatures[usize::from(b) % self.signatures.len()],
                rest,
            ),
            _ => match self.signatures.first() {
                Some(s) => (s, input),
                None => return Ok(Outcome("no fixtures".into())),
            },
        };
        let json = check_decoded(
            ferry_serving::oip::decode_infer_request(body, signature),
            signature,
        )?;
        // The binary tensor data extension: the JSON ends at the last `}` and what follows is
        // tensor bytes, taken by the inputs' `binary_data_size`.
        if let Some(end) = body.iter().rposition(|b| *b == b'}').map(|i| i + 1)
            && end < body.len()
        {
            return check_decoded(
                ferry_serving::oip::decode_binary_infer_request(body, end, signature),
                signature,
            );
        }
        Ok(json)
    }
}

/// The gRPC `ModelInfer` decoder (protobuf bytes), against the same signatures, with the same
/// invariant. Seeds: for each fixture, a request with its inputs in `raw_input_contents` and
/// one with typed `contents`.
pub struct Grpc(Oip);

impl Target for Grpc {
    fn name(&self) -> &'static str {
        "grpc"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        use ferry_serving::oip::grpc::proto;
        let mut seeds = Vec::new();
        for (i, signature) in self.0.signatures.iter().enumerate() {
            for typed in [false, true] {
                let mut request = proto::ModelInferRequest {
                    model_name: "m".into(),
                    id: "s".into(),
                    outputs: vec![proto::InferRequestedOutputTensor {
                        name: "x".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                for input in &signature.inputs {
                    let mut tensor = proto::InferInputTensor {
                        name: input.name.clone(),
                        datatype: input.datatype.clone(),
                        shape: vec![2, 3],
                        ..Default::default()
                    };
                    if typed {
                        tensor.contents = Some(proto::InferTensorContents {
                            fp32_contents: vec![1.0; 6],
                            int64_contents: vec![1; 6],
                            bytes_contents: vec![b"ab".to_vec(); 6],
                            ..Default::default()
                        });
                    } else {
                        request.raw_input_contents.push(vec![0x3f; 24]);
                    }
                    request.inputs.push(tensor);
                }
                let mut seed = vec![u8::try_from(i).unwrap_or(0)];
                seed.extend(prost::Message::encode_to_vec(&request));
                seeds.push(seed);
            }
        }
        seeds
    }

    fn dictionary(&self) -> &'static [&'static [u8]] {
        &[
            b"FP32", b"INT64", b"BYTES", b"FP16", b"BF16", b"BOOL", b"input", b"\x0a", b"\x3a",
        ]
    }

    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        let (signature, body) = match input.split_first() {
            Some((&b, rest)) if !self.0.signatures.is_empty() => (
                &self.0.signatures[usize::from(b) % self.0.signatures.len()],
                rest,
            ),
            _ => return Ok(Outcome("empty".into())),
        };
        check_decoded(
            ferry_serving::oip::decode_grpc_infer_request(body, signature),
            signature,
        )
    }
}

/// What every decoded request must satisfy: one tensor per model input, each holding exactly
/// the elements its shape says.
fn check_decoded(
    decoded: Result<ferry_serving::oip::DecodedRequest, ferry_serving::oip::OipError>,
    signature: &ferry_api::onnx::ModelSignature,
) -> Result<Outcome, String> {
    match decoded {
        Ok(request) => {
            if request.inputs.len() != signature.inputs.len() {
                return Err(format!(
                    "accepted {} tensors for a model with {} inputs",
                    request.inputs.len(),
                    signature.inputs.len()
                ));
            }
            for tensor in &request.inputs {
                let elements = tensor
                    .shape()
                    .iter()
                    .try_fold(1usize, |acc, d| acc.checked_mul(*d));
                if elements != Some(tensor.data().len()) {
                    return Err(format!(
                        "accepted a tensor of shape {:?} with {} elements",
                        tensor.shape(),
                        tensor.data().len()
                    ));
                }
            }
            Ok(Outcome("accepted".into()))
        }
        Err(e) => Ok(outcome_of(&e.to_string())),
    }
}

// ---------------------------------------------------------------------------------------------

/// The streaming ONNX scanner behind upload validation. Invariant: the answer does not depend on
/// how the bytes are cut into chunks.
pub struct Onnx;

impl Target for Onnx {
    fn name(&self) -> &'static str {
        "onnx"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        [
            "int64.onnx",
            "two_inputs.onnx",
            "fixed_shape.onnx",
            "unloadable.onnx",
        ]
        .iter()
        .map(|f| fixture(f))
        .filter(|b| !b.is_empty())
        .collect()
    }

    fn dictionary(&self) -> &'static [&'static [u8]] {
        // Protobuf tags of ModelProto/GraphProto fields and varints that are long or huge.
        &[
            b"\x08\x08",
            b"\x3a",
            b"\x42\x04\x0a\x00\x10\x11",
            b"\x5a",
            b"\x62",
            b"\x0a",
            b"\x12",
            b"\xff\xff\xff\xff\x0f",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
            b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
        ]
    }

    fn max_len(&self) -> usize {
        16 * 1024
    }

    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        let whole = inspect(input);
        // Cut where the input's hash says: every cut point is tried across runs.
        let digest = Sha256::digest(input);
        let mut cuts: Vec<usize> = digest
            .chunks(4)
            .take(3)
            .map(|c| {
                let n = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
                n % (input.len() + 1)
            })
            .collect();
        cuts.sort_unstable();
        let mut scanner = OnnxScanner::new();
        let mut start = 0;
        let mut chunked = Ok(());
        for cut in cuts.into_iter().chain(std::iter::once(input.len())) {
            chunked = scanner.feed(&input[start..cut]);
            if chunked.is_err() {
                break;
            }
            start = cut;
        }
        let chunked = chunked.and_then(|()| scanner.finish());
        let (a, b) = (format!("{whole:?}"), format!("{chunked:?}"));
        if a != b {
            return Err(format!(
                "the answer depends on the chunking: whole {a} but chunked {b}"
            ));
        }
        Ok(match whole {
            Ok(sig) => Outcome(format!(
                "model with {} inputs, {} outputs",
                sig.inputs.len().min(4),
                sig.outputs.len().min(4)
            )),
            Err(e) => outcome_of(&e.to_string()),
        })
    }
}

// ---------------------------------------------------------------------------------------------

/// The endpoint policy as a client sends it, and its validator. Invariants: validation is
/// idempotent (a validated policy validates to itself) and survives a JSON round trip.
pub struct Policy;

impl Target for Policy {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![
            br#"{"model":"fraud","stable":1}"#.to_vec(),
            br#"{"model":"fraud","stable":2,"canary":{"version":3,"weight":0.05},"shadows":[{"version":1,"sample_rate":0.5}],"sticky_header":"x-user","drift":{"metric":"psi","threshold":0.2,"min_samples":100,"consecutive_windows":2,"window_samples":500}}"#.to_vec(),
        ]
    }

    fn dictionary(&self) -> &'static [&'static [u8]] {
        &[
            br#""canary""#,
            br#""weight""#,
            br#""shadows""#,
            br#""sample_rate""#,
            br#""sticky_header""#,
            br#""drift""#,
            br#""metric""#,
            br#""kl""#,
            br#""js""#,
            br#""threshold""#,
            b"1e-9",
            b"0.0005",
            b"0.9995",
            b"1.0000000001",
        ]
    }

    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        let policy: EndpointPolicy = match serde_json::from_slice(input) {
            Ok(p) => p,
            Err(e) => return Ok(Outcome(format!("json: {:?}", e.classify()))),
        };
        match validate_policy(policy) {
            Ok(valid) => {
                let again = validate_policy(valid.clone())
                    .map_err(|e| format!("a validated policy was refused on revalidation: {e}"))?;
                if again != valid {
                    return Err(format!(
                        "validation is not idempotent: {valid:?} became {again:?}"
                    ));
                }
                let text = serde_json::to_vec(&valid).map_err(|e| e.to_string())?;
                let back: EndpointPolicy = serde_json::from_slice(&text)
                    .map_err(|e| format!("a validated policy does not parse back: {e}"))?;
                if back != valid {
                    return Err(format!("the JSON round trip changed {valid:?} to {back:?}"));
                }
                Ok(Outcome("valid".into()))
            }
            Err(e) => Ok(outcome_of(&e.to_string())),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Training profiles: as uploaded (JSON metadata) and as built from CSV. Invariant: a profile
/// built from any CSV that is accepted passes the same validation an uploaded one must.
pub struct ProfileTarget;

impl Target for ProfileTarget {
    fn name(&self) -> &'static str {
        "profile"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let csv = b"a,b,c\n1,2,3\n4,5.5,-6\n7,8,9e3\n0.1,0.2,0.3\n".to_vec();
        let mut as_csv = vec![b'C'];
        as_csv.extend_from_slice(&csv);
        let mut seeds = vec![as_csv];
        if let Ok(profile) = profile_csv(
            || Ok(Cursor::new(csv.clone())),
            "input",
            &ProfileOptions::default(),
        ) {
            let full = Profile {
                format: ferry_api::drift::profile::PROFILE_FORMAT,
                inputs: vec![profile],
            };
            let mut as_json = vec![b'J'];
            as_json.extend_from_slice(
                serde_json::Value::Object(full.to_metadata())
                    .to_string()
                    .as_bytes(),
            );
            seeds.push(as_json);
        }
        seeds
    }

    fn dictionary(&self) -> &'static [&'static [u8]] {
        &[
            b",",
            b"\n",
            b"\"",
            b"NaN",
            b"inf",
            b"-inf",
            b"1e309",
            br#""edges""#,
            br#""counts""#,
            br#""features""#,
            br#""inputs""#,
            br#""column""#,
            b"\r\n",
        ]
    }

    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        match input.split_first() {
            Some((b'C', csv)) => {
                let options = ProfileOptions {
                    reservoir_size: 64,
                    ..ProfileOptions::default()
                };
                match profile_csv(|| Ok(Cursor::new(csv.to_vec())), "input", &options) {
                    Ok(built) => {
                        let profile = Profile {
                            format: ferry_api::drift::profile::PROFILE_FORMAT,
                            inputs: vec![built],
                        };
                        profile.validate().map_err(|e| {
                            format!("a profile built from CSV fails validation: {e}")
                        })?;
                        Ok(Outcome("csv profile".into()))
                    }
                    Err(e) => Ok(outcome_of(&format!("csv: {e}"))),
                }
            }
            Some((_, json)) => {
                let value: serde_json::Value = match serde_json::from_slice(json) {
                    Ok(v) => v,
                    Err(e) => return Ok(Outcome(format!("json: {:?}", e.classify()))),
                };
                match Profile::from_metadata(&value) {
                    Ok(profile) => {
                        // Scoring an accepted profile against empty live data must work too.
                        let _ = ferry_api::drift::analyze_drift(
                            &profile,
                            &ferry_api::traffic::DriftCounters::default(),
                        );
                        Ok(Outcome("uploaded profile".into()))
                    }
                    Err(e) => Ok(outcome_of(&format!("metadata: {e}"))),
                }
            }
            None => Ok(Outcome("empty".into())),
        }
    }
}

// ---------------------------------------------------------------------------------------------

const BOUNDARY: &str = "ferryfuzzboundary";

/// The whole upload route in process (multipart parsing, metadata, streaming hash and ONNX scan,
/// the database and an in-memory object store). Invariants: never a 5xx; an accepted version's
/// artifact hashes to its recorded sha256.
pub struct Upload {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

impl Upload {
    /// A registry on a temporary SQLite database.
    ///
    /// # Panics
    /// When the temporary registry cannot be set up (a broken machine, not a finding).
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime");
        let dir = tempfile::tempdir().expect("a temporary folder");
        let url = format!("sqlite://{}", dir.path().join("ferry.db").display());
        let router = runtime.block_on(async {
            let store = MetadataStore::connect(&url, 4).await.expect("SQLite");
            store.migrate().await.expect("migrations");
            let prometheus = Arc::new(prometheus::Registry::new());
            let http = HttpMetrics::register(&prometheus).expect("metrics");
            let mut config = Config::default();
            config.upload.max_model_bytes = 1 << 20;
            config.upload.max_metadata_bytes = 64 * 1024;
            let state = AppState::new(store, BlobStore::in_memory(), config, prometheus, http)
                .expect("state");
            ferry_registry::router(state)
        });
        Upload {
            runtime,
            router,
            _dir: dir,
        }
    }
}

impl Default for Upload {
    fn default() -> Self {
        Self::new()
    }
}

fn multipart(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

impl Target for Upload {
    fn name(&self) -> &'static str {
        "upload"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let model = fixture("int64.onnx");
        vec![
            multipart(&[
                ("metadata", br#"{"git_commit":"0123456789abcdef0123456789abcdef01234567","params":{"lr":"0.1"},"tags":{"a":"b"},"data":[{"uri":"s3://x/y","sha256":"6182d8b3b3035a4a6c4a4a3b1e9a5f6d0e7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f"}]}"#),
                ("model", &model),
            ]),
            multipart(&[("model", &fixture("two_inputs.onnx"))]),
        ]
    }

    fn dictionary(&self) -> &'static [&'static [u8]] {
        &[
            b"--ferryfuzzboundary\r\n",
            b"--ferryfuzzboundary--",
            b"Content-Disposition: form-data; name=\"model\"\r\n\r\n",
            b"Content-Disposition: form-data; name=\"metadata\"\r\n\r\n",
            b"Content-Type: application/json\r\n",
            br#""sha256""#,
            br#""profile""#,
            br#""git_commit""#,
            b"\r\n\r\n",
        ]
    }

    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        let router = self.router.clone();
        let body = input.to_vec();
        self.runtime.block_on(async move {
            let request = Request::post("/api/v1/models/fuzz/versions")
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                // As Ferry's CLI: an open registry takes form-posted writes only with it.
                .header(ferry_api::CLIENT_HEADER, "fuzz")
                .body(Body::from(body))
                .map_err(|e| e.to_string())?;
            let response = router
                .clone()
                .oneshot(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&bytes).to_string();
            if status.is_server_error() {
                return Err(format!("{status}: {text}"));
            }
            if status == StatusCode::CREATED {
                let record: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                let version = record["version"].as_i64().unwrap_or_default();
                let request =
                    Request::get(format!("/api/v1/models/fuzz/versions/{version}/artifact"))
                        .body(Body::empty())
                        .map_err(|e| e.to_string())?;
                let response = router.oneshot(request).await.map_err(|e| e.to_string())?;
                let artifact = axum::body::to_bytes(response.into_body(), 2 << 20)
                    .await
                    .map_err(|e| e.to_string())?;
                let actual = hex::encode(Sha256::digest(&artifact));
                if record["sha256"].as_str() != Some(actual.as_str()) {
                    return Err(format!(
                        "version {version} was recorded as {} but its artifact hashes to {actual}",
                        record["sha256"]
                    ));
                }
                return Ok(Outcome("created".into()));
            }
            let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["detail"].as_str().map(str::to_string))
                .unwrap_or(text);
            Ok(outcome_of(&format!("{} {detail}", status.as_u16())))
        })
    }
}

// ---------------------------------------------------------------------------------------------

/// The registry's multipart parser on its own, fed the same body in different chunks.
/// Invariant: the parts (names and bytes) and the verdict do not depend on where hyper happened
/// to cut the body — whole, one byte at a time, every 7 bytes, and at a few input-chosen points.
/// The input's first line is the boundary, the rest the body.
pub struct Multipart;

/// What one parse produced: each part's name and bytes, then `Ok` (closing boundary seen) or
/// the error.
type Parsed = (Vec<(Option<String>, Vec<u8>)>, Result<(), String>);

fn parse_in_chunks(boundary: &str, chunks: &[&[u8]]) -> Parsed {
    let mut parts: Vec<(Option<String>, Vec<u8>)> = Vec::new();
    let mut parser = match Parser::new(boundary) {
        Ok(parser) => parser,
        Err(e) => return (parts, Err(e)),
    };
    let mut rest = chunks.iter();
    loop {
        match parser.next_event() {
            Ok(Some(Event::Part(head))) => parts.push((head.name, Vec::new())),
            Ok(Some(Event::Data(bytes))) => match parts.last_mut() {
                Some((_, data)) if !bytes.is_empty() => data.extend_from_slice(&bytes),
                Some(_) => return (parts, Err("an empty Data event".into())),
                None => return (parts, Err("data before any part".into())),
            },
            Ok(Some(Event::End)) => return (parts, Ok(())),
            Ok(None) => match rest.next() {
                Some(chunk) => parser.push(bytes::Bytes::copy_from_slice(chunk)),
                None => return (parts, parser.finish()),
            },
            Err(e) => return (parts, Err(e)),
        }
    }
}

impl Target for Multipart {
    fn name(&self) -> &'static str {
        "multipart"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut two = b"ferryfuzzboundary\n".to_vec();
        two.extend(multipart(&[
            ("metadata", br#"{"git_commit":"0123"}"#),
            (
                "model",
                b"\r\n--ferryfuzzboundar\r\n-\r\r\n--ferryfuzzboundaryX",
            ),
        ]));
        let mut short = b"b\n".to_vec();
        short.extend_from_slice(
            b"preamble\r\n--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n\r\n--\r\n--b--epilogue",
        );
        vec![two, short]
    }

    fn dictionary(&self) -> &'static [&'static [u8]] {
        &[
            b"\r\n--ferryfuzzboundary\r\n",
            b"\r\n--ferryfuzzboundary--",
            b"--ferryfuzzboundary",
            b"Content-Disposition: form-data; name=\"model\"\r\n\r\n",
            b"Content-Disposition: form-data; name=model; filename=\"a\\\"b\"\r\n",
            b"Content-Type: application/octet-stream\r\n",
            b"\r\n\r\n",
            b"\r\n",
            b"--",
        ]
    }

    fn max_len(&self) -> usize {
        // Fed one byte at a time too: keep each run short.
        4096
    }

    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        let split = input
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(input.len());
        let boundary = String::from_utf8_lossy(&input[..split]).into_owned();
        let body = input.get(split + 1..).unwrap_or_default();
        let whole = parse_in_chunks(&boundary, &[body]);

        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        let sevens: Vec<&[u8]> = body.chunks(7).collect();
        // Cuts chosen by the input itself, so that mutations move them: three anywhere, and
        // chunks of random sizes around the delimiter's length (`\r\n--` + boundary), where a
        // delimiter straddles chunks in every possible way.
        let mut rng = Rng::new(body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }));
        let mut cuts: Vec<usize> = (0..3).map(|_| rng.below(body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut points = vec![0];
        points.extend(cuts);
        points.push(body.len());
        let random: Vec<&[u8]> = points.windows(2).map(|w| &body[w[0]..w[1]]).collect();
        let around = 2 * (boundary.len() + 4) + 2;
        let mut sized: Vec<&[u8]> = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at((1 + rng.below(around)).min(rest.len()));
            sized.push(chunk);
            rest = after;
        }

        for (how, chunks) in [
            ("one byte", &bytes),
            ("7 bytes", &sevens),
            ("three cuts", &random),
            ("random sizes", &sized),
        ] {
            let other = parse_in_chunks(&boundary, chunks);
            if other != whole {
                return Err(format!(
                    "fed in chunks of {how} ({:?}), the body parses as {:?}, whole as {:?}",
                    chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
                    summary(&other),
                    summary(&whole),
                ));
            }
        }
        // The first parts' shapes (named or not, empty or not) and the verdict, so that the
        // corpus keeps bodies of different structure, not only different errors.
        let shapes: String = whole
            .0
            .iter()
            .take(4)
            .map(|(name, data)| match (name.is_some(), data.is_empty()) {
                (true, true) => 'N',
                (true, false) => 'D',
                (false, true) => '_',
                (false, false) => 'd',
            })
            .collect();
        Ok(match whole.1 {
            Ok(()) => Outcome(format!("[{shapes}] complete")),
            // What follows `: ` echoes the input (a header line): not part of the outcome.
            Err(e) => Outcome(format!(
                "[{shapes}] {}",
                outcome_of(e.split(": ").next().unwrap_or_default()).0
            )),
        })
    }
}

/// A parse in few words: each part's name and length, and the verdict.
fn summary(parsed: &Parsed) -> String {
    let parts: Vec<String> = parsed
        .0
        .iter()
        .map(|(name, data)| format!("{name:?}: {} bytes", data.len()))
        .collect();
    format!("[{}] {:?}", parts.join(", "), parsed.1)
}
