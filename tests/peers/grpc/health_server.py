#!/usr/bin/env python3
"""A real gRPC server (PyPI grpcio + grpcio-health-checking) for the grpc check tests.

Serves grpc.health.v1.Health on 127.0.0.1 (port 0: the OS picks a free one), plaintext or
with --cert/--key TLS, with every service in --serving set to SERVING. Prints
"PORT <n>" once listening, then reads commands on stdin, one per line, answering "ok":

    set <service|-> SERVING|NOT_SERVING|SERVICE_UNKNOWN   ("-" is the empty service)
    stop                                                 (exits)

Exits when stdin closes (so it dies with the test that started it).
"""

import argparse
import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--serving", action="append", default=[])
    a = p.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in [""] + a.serving:
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    addr = "127.0.0.1:%d" % a.port
    if a.cert:
        with open(a.cert, "rb") as f:
            cert = f.read()
        with open(a.key, "rb") as f:
            key = f.read()
        port = server.add_secure_port(addr, grpc.ssl_server_credentials([(key, cert)]))
    else:
        port = server.add_insecure_port(addr)
    server.start()
    print("PORT %d" % port, flush=True)

    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "stop":
            break
        if words[0] == "set" and len(words) == 3:
            name = "" if words[1] == "-" else words[1]
            status = health_pb2.HealthCheckResponse.ServingStatus.Value(words[2])
            servicer.set(name, status)
            print("ok", flush=True)
        else:
            print("error: unknown command", flush=True)
    server.stop(grace=0)


if __name__ == "__main__":
    main()
