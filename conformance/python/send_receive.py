"""Producer and SimpleConsumer: send, receive, ack.

Sends --count messages with a body, a tag, two keys and two user properties, then receives
them with a SimpleConsumer filtered on --tag, acking each, then makes one more receive that
should come back empty. --mode produce or consume runs only one half (for cross-client tests).
"""

from rocketmq import FilterExpression, Message, Producer, SimpleConsumer

from common import configuration, describe, emit, parser, run


def main():
    arguments = parser(__doc__)
    arguments.add_argument("--tag", default="tag-a")
    arguments.add_argument("--count", type=int, default=3)
    arguments.add_argument("--invisible-s", type=int, default=15)
    arguments.add_argument("--mode", choices=("both", "produce", "consume"), default="both")
    args = arguments.parse_args()
    stage = ["configure"]

    def scenario():
        config = configuration(args)
        if args.mode in ("both", "produce"):
            stage[0] = "producer startup"
            producer = Producer(config, (args.topic,))
            producer.startup()
            try:
                for index in range(args.count):
                    stage[0] = "send"
                    message = Message()
                    message.topic = args.topic
                    message.body = f"py body {index}".encode()
                    message.tag = args.tag
                    message.keys = f"key-{index}"
                    message.keys = "shared-key"
                    message.add_property("index", str(index))
                    message.add_property("origin", "python-client")
                    receipt = producer.send(message)
                    emit(
                        "sent",
                        index=index,
                        message_id=receipt.message_id,
                        offset=receipt.offset,
                        transaction_id=receipt.transaction_id,
                    )
            finally:
                producer.shutdown()
        if args.mode in ("both", "consume"):
            stage[0] = "consumer startup"
            consumer = SimpleConsumer(
                config,
                args.group,
                {args.topic: FilterExpression(args.tag)},
                await_duration=args.await_s,
            )
            consumer.startup()
            try:
                received = 0
                for _ in range(args.max_rounds):
                    if received >= args.count:
                        break
                    stage[0] = "receive"
                    for message in consumer.receive(32, args.invisible_s):
                        emit("received", **describe(message))
                        stage[0] = "ack"
                        consumer.ack(message)
                        emit("acked", message_id=message.message_id)
                        received += 1
                stage[0] = "empty receive"
                rest = consumer.receive(32, args.invisible_s)
                emit("empty_receive", count=len(rest), ids=[m.message_id for m in rest])
            finally:
                consumer.shutdown()

    run(stage, scenario)


if __name__ == "__main__":
    main()
