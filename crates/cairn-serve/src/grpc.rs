//! The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` (ServerLive,
//! ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer), on the same models,
//! routing, batching, prediction log and trace ids as HTTP.
//!
//! A `ModelInfer` request becomes the very request the HTTP binary tensor data extension
//! produces — a JSON header that names each input with its `binary_data_size`, then the
//! inputs' bytes (`raw_input_contents` as they are; typed `contents` laid out the same way) —
//! so both transports share one parser and every check it makes. Answers go back as
//! `raw_output_contents` when the request sent raw inputs (as Triton does), else as typed
//! `contents`. The trace id is in the response metadata (`x-cairn-trace-id`) and in
//! `parameters["trace_id"]`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use crate::server::{self, ApiError, App, Protocol, Request, TRACE_HEADER};
use crate::tensor::{Data, Output};

/// The code generated from `proto/grpc_inference.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::infer_parameter::ParameterChoice;
use proto::model_infer_response::InferOutputTensor;
use proto::model_metadata_response::TensorMetadata;
use proto::*;

/// The gRPC service over the server's shared state.
pub struct Inference {
    app: Arc<App>,
}

/// A tonic service to add to a `tonic::transport::Server`.
pub fn service(app: Arc<App>) -> GrpcInferenceServiceServer<Inference> {
    let limit = app.max_body;
    use tonic::codec::CompressionEncoding::{Deflate, Gzip};
    GrpcInferenceServiceServer::new(Inference { app })
        // The same limit as HTTP bodies (`--max-body`).
        .max_decoding_message_size(limit)
        .accept_compressed(Gzip)
        .accept_compressed(Deflate)
        // Only for clients that say they accept it (`grpc-accept-encoding`).
        .send_compressed(Gzip)
        .send_compressed(Deflate)
}

impl Inference {
    fn limit(&self) -> usize {
        self.app.max_body
    }
}

fn status(error: &ApiError) -> Status {
    let code = match error.status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => tonic::Code::InvalidArgument,
        StatusCode::NOT_FOUND => tonic::Code::NotFound,
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted,
        _ => tonic::Code::Internal,
    };
    Status::new(code, error.message.clone())
}

fn version_number(text: &str) -> Result<Option<i64>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    server::parse_version(text).map(Some).map_err(|e| status(&e))
}

fn string_parameter(text: &str) -> InferParameter {
    InferParameter { parameter_choice: Some(ParameterChoice::StringParam(text.to_owned())) }
}

/// The request's parameters as the JSON the HTTP path reads (`{"binary_data_output": true}`).
fn parameters_json(parameters: &std::collections::HashMap<String, InferParameter>) -> Value {
    Value::Object(
        parameters
            .iter()
            .filter_map(|(k, p)| {
                let value = match p.parameter_choice.as_ref()? {
                    ParameterChoice::BoolParam(b) => json!(b),
                    ParameterChoice::Int64Param(i) => json!(i),
                    ParameterChoice::StringParam(s) => json!(s),
                    ParameterChoice::DoubleParam(d) => json!(d),
                    ParameterChoice::Uint64Param(u) => json!(u),
                };
                Some((k.clone(), value))
            })
            .collect(),
    )
}

/// Lays typed contents out as binary tensor data (little-endian; BYTES length-prefixed).
/// Only the datatypes a model can take are laid out; any other is refused by the parser.
fn contents_bytes(datatype: &str, contents: &InferTensorContents, out: &mut Vec<u8>) {
    match datatype {
        "FP32" => contents.fp32_contents.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        "FP64" => contents.fp64_contents.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        "INT64" => contents.int64_contents.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        "INT32" => contents.int_contents.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        "BOOL" => out.extend(contents.bool_contents.iter().map(|&b| u8::from(b))),
        "BYTES" => contents.bytes_contents.iter().for_each(|b| {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }),
        _ => {}
    }
}

/// A `ModelInfer` request as the shared parser reads it. Returns whether the inputs came raw.
fn to_request(message: &ModelInferRequest, limit: usize) -> Result<(Request, bool), Status> {
    let raw = !message.raw_input_contents.is_empty();
    if raw && message.raw_input_contents.len() != message.inputs.len() {
        return Err(Status::invalid_argument(format!(
            "raw_input_contents has {} entries for {} inputs; send one per input, in order",
            message.raw_input_contents.len(),
            message.inputs.len()
        )));
    }
    let mut binary = Vec::new();
    let mut inputs = Vec::with_capacity(message.inputs.len());
    for (i, input) in message.inputs.iter().enumerate() {
        let before = binary.len();
        match (raw, &input.contents) {
            (true, _) => binary.extend_from_slice(&message.raw_input_contents[i]),
            (false, Some(contents)) => contents_bytes(&input.datatype, contents, &mut binary),
            (false, None) => {
                return Err(Status::invalid_argument(format!(
                    "input `{}` has no contents (send contents or raw_input_contents)",
                    input.name
                )));
            }
        }
        if binary.len() > limit {
            return Err(Status::resource_exhausted(format!(
                "the inputs are larger than this server's limit of {limit} bytes (cairn serve --max-body)"
            )));
        }
        inputs.push(json!({
            "name": input.name,
            "datatype": input.datatype,
            "shape": input.shape,
            "parameters": {"binary_data_size": binary.len() - before},
        }));
    }
    let outputs: Vec<Value> = message.outputs.iter().map(|o| json!({"name": o.name})).collect();
    let mut json = json!({"inputs": inputs, "parameters": parameters_json(&message.parameters)});
    if !outputs.is_empty() {
        json["outputs"] = Value::Array(outputs);
    }
    Ok((Request { json, binary: Bytes::from(binary) }, raw))
}

/// Typed contents of one output.
fn typed_contents(data: &Data) -> InferTensorContents {
    let mut contents = InferTensorContents::default();
    match data {
        Data::F32(v) => contents.fp32_contents = v.clone(),
        Data::F64(v) => contents.fp64_contents = v.clone(),
        Data::I64(v) => contents.int64_contents = v.clone(),
        Data::I32(v) => contents.int_contents = v.clone(),
        Data::Bool(v) => contents.bool_contents = v.clone(),
        Data::Str(v) => contents.bytes_contents = v.iter().map(|s| s.as_bytes().to_vec()).collect(),
    }
    contents
}

fn to_response(answer: &server::Answer, message: &ModelInferRequest, raw: bool) -> ModelInferResponse {
    let wanted: Vec<&str> = message.outputs.iter().map(|o| o.name.as_str()).collect();
    let mut response = ModelInferResponse {
        model_name: answer.version.name.clone(),
        model_version: answer.version.version.to_string(),
        id: message.id.clone(),
        parameters: [("trace_id".to_owned(), string_parameter(&answer.trace_id))].into(),
        ..Default::default()
    };
    for (name, output) in
        answer.outputs.iter().filter(|(n, _)| wanted.is_empty() || wanted.contains(&n.as_str()))
    {
        let (datatype, shape, data, parameters) = match output {
            Output::Tensor(t) => (
                t.data.dtype().kserve(),
                t.shape.iter().map(|&d| d as i64).collect::<Vec<_>>(),
                t.data.clone(),
                Default::default(),
            ),
            Output::Classes { classes, probabilities, rows } => (
                "FP32",
                vec![*rows as i64, classes.len() as i64],
                Data::F32(probabilities.clone()),
                [("classes".to_owned(), string_parameter(&Value::from(classes.clone()).to_string()))].into(),
            ),
        };
        let mut tensor = InferOutputTensor {
            name: name.clone(),
            datatype: datatype.to_owned(),
            shape,
            parameters,
            contents: None,
        };
        if raw {
            let mut bytes = Vec::new();
            crate::tensor::to_binary(&data, &mut bytes);
            response.raw_output_contents.push(bytes);
        } else {
            tensor.contents = Some(typed_contents(&data));
        }
        response.outputs.push(tensor);
    }
    response
}

fn with_trace<T>(mut response: GrpcResponse<T>, trace: &str) -> GrpcResponse<T> {
    if let Ok(value) = MetadataValue::try_from(trace) {
        response.metadata_mut().insert(TRACE_HEADER, value);
    }
    response
}

fn metadata_tensor(value: &Value) -> TensorMetadata {
    TensorMetadata {
        name: value["name"].as_str().unwrap_or_default().to_owned(),
        datatype: value["datatype"].as_str().unwrap_or_default().to_owned(),
        shape: value["shape"]
            .as_array()
            .map(|d| d.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _request: GrpcRequest<ServerLiveRequest>,
    ) -> Result<GrpcResponse<ServerLiveResponse>, Status> {
        Ok(GrpcResponse::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: GrpcRequest<ServerReadyRequest>,
    ) -> Result<GrpcResponse<ServerReadyResponse>, Status> {
        Ok(GrpcResponse::new(ServerReadyResponse { ready: server::all_ready(&self.app).0 }))
    }

    async fn model_ready(
        &self,
        request: GrpcRequest<ModelReadyRequest>,
    ) -> Result<GrpcResponse<ModelReadyResponse>, Status> {
        let message = request.into_inner();
        let number = version_number(&message.version)?;
        // A model that is not served is not ready (as Triton answers), not an error.
        let ready = match server::kserve_lookup(&self.app, &message.name, number) {
            Ok((route, version)) => {
                if number.is_some() {
                    version.ready()
                } else {
                    route.ready()
                }
            }
            Err(e) if e.status == StatusCode::NOT_FOUND => false,
            Err(e) => return Err(status(&e)),
        };
        Ok(GrpcResponse::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _request: GrpcRequest<ServerMetadataRequest>,
    ) -> Result<GrpcResponse<ServerMetadataResponse>, Status> {
        Ok(GrpcResponse::new(ServerMetadataResponse {
            name: "cairn".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["binary_tensor_data".into()],
        }))
    }

    async fn model_metadata(
        &self,
        request: GrpcRequest<ModelMetadataRequest>,
    ) -> Result<GrpcResponse<ModelMetadataResponse>, Status> {
        let message = request.into_inner();
        let number = version_number(&message.version)?;
        let (route, version) =
            server::kserve_lookup(&self.app, &message.name, number).map_err(|e| status(&e))?;
        let metadata = server::kserve_version_metadata(&route, &version);
        let tensors =
            |key: &str| metadata[key].as_array().into_iter().flatten().map(metadata_tensor).collect();
        Ok(GrpcResponse::new(ModelMetadataResponse {
            name: route.target.model.clone(),
            versions: route.versions().map(|v| v.version.to_string()).collect(),
            platform: "onnxruntime_onnx".into(),
            inputs: tensors("inputs"),
            outputs: tensors("outputs"),
        }))
    }

    async fn model_infer(
        &self,
        request: GrpcRequest<ModelInferRequest>,
    ) -> Result<GrpcResponse<ModelInferResponse>, Status> {
        let message = request.into_inner();
        let number = version_number(&message.model_version)?;
        // A model or version that is not served is the first thing to say.
        if let Err(e) = server::kserve_lookup(&self.app, &message.model_name, number)
            && e.status == StatusCode::NOT_FOUND
        {
            return Err(status(&e));
        }
        let (parsed, raw) = to_request(&message, self.limit())?;
        let outcome = server::predict(
            &self.app,
            Protocol::Grpc,
            &message.model_name,
            number,
            Arc::new(parsed),
            server::kserve_parse,
        )
        .await;
        match outcome {
            Ok(answer) => {
                Ok(with_trace(GrpcResponse::new(to_response(&answer, &message, raw)), &answer.trace_id))
            }
            Err((error, trace)) => {
                let mut metadata = MetadataMap::new();
                if let Some(value) = trace.as_deref().and_then(|t| MetadataValue::try_from(t).ok()) {
                    metadata.insert(TRACE_HEADER, value);
                }
                let plain = status(&error);
                Err(Status::with_metadata(plain.code(), plain.message(), metadata))
            }
        }
    }
}

/// Serves gRPC on `listener` until `shutdown` resolves, then lets calls in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    use tokio_stream::StreamExt;
    // Answers go out at once: without TCP_NODELAY, Nagle's algorithm holds a reply's last
    // frame until the client's delayed ACK (about 40 ms on Linux).
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|stream| {
        stream.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    tonic::transport::Server::builder()
        // Large requests and answers (10,000 rows) should not wait on HTTP/2 flow control.
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .add_service(service(app))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
