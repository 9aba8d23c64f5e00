"""Shared helpers of the conformance scenarios.

Each scenario script drives the official RocketMQ 5 Python client against one endpoint and
prints what it observed as JSON lines on stdout, one object per event with an "event" field.
The Rust tests in conformance/tests/python_client.rs run the scripts and assert on those
lines; the scripts themselves assert nothing, so a failure always shows what the client saw.
"""

import argparse
import json
import sys
import threading
import time
import traceback

from rocketmq import ClientConfiguration, Credentials


_EMIT_LOCK = threading.Lock()


def emit(event, **fields):
    """Prints one observation as a JSON line (whole lines even from the client's threads)."""
    fields["event"] = event
    line = json.dumps(fields, sort_keys=True) + "\n"
    with _EMIT_LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


def now_ms():
    return int(time.time() * 1000)


def parser(description):
    """An argument parser with the options every scenario takes."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--endpoint", required=True, help="access point, host:port")
    result.add_argument("--access-key", default="", help="empty for no credentials")
    result.add_argument("--secret-key", default="")
    result.add_argument("--topic", required=True)
    result.add_argument("--group", default="")
    result.add_argument(
        "--await-s", type=int, default=5, help="simple consumer long poll, seconds"
    )
    result.add_argument(
        "--max-rounds", type=int, default=20, help="most receive calls in a collecting loop"
    )
    return result


def configuration(args):
    return ClientConfiguration(
        args.endpoint, Credentials(args.access_key, args.secret_key)
    )


def describe(message):
    """The fields of a received message the tests compare."""
    body = message.body
    return {
        "message_id": message.message_id,
        "topic": message.topic,
        "body": body.decode("utf-8", "replace") if body is not None else None,
        "tag": message.tag,
        "keys": sorted(message.keys),
        "properties": dict(message.properties),
        "message_group": message.message_group,
        "delivery_timestamp": message.delivery_timestamp,
        "born_timestamp": message.born_timestamp,
        "born_host": message.born_host,
        "delivery_attempt": message.delivery_attempt,
        "receipt_handle": message.receipt_handle,
        "corrupted": message.corrupted,
        "received_at_ms": now_ms(),
    }


def run(stage_holder, body):
    """Runs `body`, turning an exception into an "error" line naming the stage it happened in.

    `stage_holder` is a one-element list the scenario updates as it goes.
    """
    try:
        body()
    except Exception as error:  # noqa: BLE001 - every client failure is an observation
        emit(
            "error",
            stage=stage_holder[0],
            type=type(error).__name__,
            message=str(error),
            trace=traceback.format_exc(),
        )
        sys.stdout.flush()
        sys.exit(1)
    emit("done")
