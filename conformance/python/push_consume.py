"""PushConsumer: the client drives receive, ack and nack itself.

Sends --count messages, then consumes them with a PushConsumer whose listener fails the
first delivery of message 0 (the client then nacks it with ChangeInvisibleDuration and it must
come back) and succeeds otherwise. Stops once every message was consumed successfully or
--wait-s passed.
"""

import os
import sys
import threading
import time

from rocketmq import (ConsumeResult, FilterExpression, Message, MessageListener,
                      Producer, PushConsumer)

from common import configuration, describe, emit, parser, run


class Listener(MessageListener):
    def __init__(self, want):
        self.lock = threading.Lock()
        self.succeeded = set()
        self.failed_once = set()
        self.want = want
        self.all_done = threading.Event()

    def consume(self, message):
        seen = describe(message)
        index = message.properties.get("index")
        with self.lock:
            fail = index == "0" and index not in self.failed_once
            if fail:
                self.failed_once.add(index)
            else:
                self.succeeded.add(message.message_id)
            emit("consumed", result="FAILURE" if fail else "SUCCESS", index=index, **seen)
            if len(self.succeeded) >= self.want:
                self.all_done.set()
        return ConsumeResult.FAILURE if fail else ConsumeResult.SUCCESS


def main():
    arguments = parser(__doc__)
    arguments.add_argument("--count", type=int, default=3)
    arguments.add_argument("--wait-s", type=int, default=60)
    arguments.add_argument("--shutdown-wait-s", type=int, default=20)
    args = arguments.parse_args()
    stage = ["configure"]

    def scenario():
        config = configuration(args)
        stage[0] = "producer startup"
        producer = Producer(config, (args.topic,))
        producer.startup()
        try:
            for index in range(args.count):
                stage[0] = "send"
                message = Message()
                message.topic = args.topic
                message.body = f"push body {index}".encode()
                message.tag = "push"
                message.add_property("index", str(index))
                receipt = producer.send(message)
                emit("sent", index=index, message_id=receipt.message_id)
        finally:
            producer.shutdown()
        listener = Listener(args.count)
        stage[0] = "push consumer startup"
        consumer = PushConsumer(
            config, args.group, listener, {args.topic: FilterExpression("push")}
        )
        consumer.startup()
        emit("started")
        stage[0] = "consume"
        finished = listener.all_done.wait(args.wait_s)
        emit("finished", complete=finished, succeeded=len(listener.succeeded))
        # Let the last acks leave before shutdown closes the channel.
        time.sleep(1)
        stage[0] = "push consumer shutdown"
        # The client's shutdown waits for its consumption threads; one stuck retrying an ack or
        # nack would hold it forever. Bound it and report instead of hanging.
        stopper = threading.Thread(target=consumer.shutdown, daemon=True)
        stopper.start()
        stopper.join(args.shutdown_wait_s)
        if stopper.is_alive():
            emit("shutdown_stuck", waited_s=args.shutdown_wait_s)
            sys.stdout.flush()
            os._exit(3)

    run(stage, scenario)


if __name__ == "__main__":
    main()
