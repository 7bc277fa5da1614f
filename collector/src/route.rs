//! The `Collector` gRPC service's route, written out instead of generated so
//! that batches arrive as the handler's own message type: for the collector
//! a [`ReceivedBatch`], each event decoded and its bytes kept as they came,
//! to be stored without encoding it again. On the wire it is the generated
//! service: same path, same messages.

use std::{convert::Infallible, future::Future, pin::Pin};

use sensor_proto::{
    encoded::{ReceivedBatch, STREAM_PATH},
    v1::{Ack, collector_server::SERVICE_NAME},
};
use tonic::{
    Request, Response, Status, Streaming,
    body::Body,
    codegen::{Body as HttpBody, Context, Poll, Service, StdError, http},
    server::{Grpc, NamedService, StreamingService},
};

use crate::server::{AckStream, CollectorService};

/// What serves `Collector.Stream` calls, with batches decoded as `Batch`.
/// The collector's is [`CollectorService`]; the benchmark's sensor-alone
/// capacity run acknowledges batches without storing them.
pub trait StreamHandler: Clone + Send + Sync + 'static {
    /// How a batch message is decoded (it is an `EventBatch` on the wire).
    type Batch: prost::Message + Default + Send + 'static;

    /// Serves one call; its acks go to the stream returned.
    fn stream(&self, request: Request<Streaming<Self::Batch>>) -> Response<AckStream>;
}

impl StreamHandler for CollectorService {
    type Batch = ReceivedBatch;

    fn stream(&self, request: Request<Streaming<ReceivedBatch>>) -> Response<AckStream> {
        CollectorService::stream(self, request)
    }
}

/// Routes `Collector.Stream` to a [`StreamHandler`]; any other path gets
/// UNIMPLEMENTED, as from a generated server.
#[derive(Debug, Clone)]
pub struct CollectorRoute<S = CollectorService> {
    service: S,
    /// Largest batch message accepted, bytes (tonic answers OUT_OF_RANGE).
    max_message_bytes: usize,
}

impl<S: StreamHandler> CollectorRoute<S> {
    pub fn new(service: S, max_message_bytes: usize) -> Self {
        Self {
            service,
            max_message_bytes,
        }
    }
}

impl<S> NamedService for CollectorRoute<S> {
    const NAME: &'static str = SERVICE_NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> Service<http::Request<B>> for CollectorRoute<S>
where
    S: StreamHandler,
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != STREAM_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let method = StreamMethod(self.service.clone());
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut grpc = Grpc::new(tonic_prost::ProstCodec::<Ack, S::Batch>::default())
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.streaming(method, request).await)
        })
    }
}

/// The one method, as tonic's server calls it.
struct StreamMethod<S>(S);

impl<S: StreamHandler> StreamingService<S::Batch> for StreamMethod<S> {
    type Response = Ack;
    type ResponseStream = AckStream;
    type Future = BoxFuture<Result<Response<AckStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<S::Batch>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { Ok(service.stream(request)) })
    }
}
