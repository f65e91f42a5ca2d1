"""Generated Open Inference Protocol V2 gRPC modules (``inference.GRPCInferenceService``).

``grpc_predict_v2.proto`` is the source; the ``*_pb2*`` modules are generated from it by
grpcio-tools and committed. After editing the .proto, regenerate them with ``make protos``::

    cd src && python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. \\
        --grpc_python_out=. slipway/serving/grpc_v2/grpc_predict_v2.proto
"""
