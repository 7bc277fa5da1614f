//! The `Collector` gRPC service's route, written out instead of generated so
//! that batches arrive as [`ReceivedBatch`]es: each event decoded and its
//! bytes kept as they came, to be stored without encoding it again. On the
//! wire it is the generated service: same path, same messages.

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

/// Routes `Collector.Stream` to a [`CollectorService`]; any other path gets
/// UNIMPLEMENTED, as from a generated server.
#[derive(Debug, Clone)]
pub struct CollectorRoute {
    service: CollectorService,
    /// Largest batch message accepted, bytes (tonic answers OUT_OF_RANGE).
    max_message_bytes: usize,
}

impl CollectorRoute {
    pub fn new(service: CollectorService, max_message_bytes: usize) -> Self {
        Self {
            service,
            max_message_bytes,
        }
    }
}

impl NamedService for CollectorRoute {
    const NAME: &'static str = SERVICE_NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<B> Service<http::Request<B>> for CollectorRoute
where
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
            let mut grpc = Grpc::new(tonic_prost::ProstCodec::<Ack, ReceivedBatch>::default())
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.streaming(method, request).await)
        })
    }
}

/// The one method, as tonic's server calls it.
struct StreamMethod(CollectorService);

impl StreamingService<ReceivedBatch> for StreamMethod {
    type Response = Ack;
    type ResponseStream = AckStream;
    type Future = BoxFuture<Result<Response<AckStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<ReceivedBatch>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { Ok(service.stream(request)) })
    }
}
