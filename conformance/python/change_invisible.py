"""SimpleConsumer change_invisible_duration.

Sends one message, receives it with a long invisible duration (--invisible-s), shortens it
with change_invisible_duration (--new-invisible-s), and receives until the message comes back.
The Rust test checks that it came back before the original invisibility would have ended.
"""

from rocketmq import FilterExpression, Message, Producer, SimpleConsumer

from common import configuration, describe, emit, now_ms, parser, run


def main():
    arguments = parser(__doc__)
    arguments.add_argument("--invisible-s", type=int, default=120)
    arguments.add_argument("--new-invisible-s", type=int, default=10)
    args = arguments.parse_args()
    stage = ["configure"]

    def scenario():
        config = configuration(args)
        stage[0] = "producer startup"
        producer = Producer(config, (args.topic,))
        producer.startup()
        try:
            stage[0] = "send"
            message = Message()
            message.topic = args.topic
            message.body = b"change my invisibility"
            receipt = producer.send(message)
            emit("sent", message_id=receipt.message_id, offset=receipt.offset)
        finally:
            producer.shutdown()
        stage[0] = "consumer startup"
        consumer = SimpleConsumer(
            config, args.group, {args.topic: FilterExpression()}, await_duration=args.await_s
        )
        consumer.startup()
        try:
            first = None
            for _ in range(args.max_rounds):
                stage[0] = "receive"
                batch = consumer.receive(32, args.invisible_s)
                if batch:
                    first = batch[0]
                    break
            if first is None:
                emit("missing", what="first delivery")
                return
            emit("received", invisible_s=args.invisible_s, **describe(first))
            old_handle = first.receipt_handle
            stage[0] = "change invisible duration"
            consumer.change_invisible_duration(first, args.new_invisible_s)
            emit(
                "changed",
                at_ms=now_ms(),
                new_invisible_s=args.new_invisible_s,
                old_receipt_handle=old_handle,
                receipt_handle=first.receipt_handle,
            )
            for _ in range(args.max_rounds):
                stage[0] = "receive again"
                batch = consumer.receive(32, args.invisible_s)
                if batch:
                    again = batch[0]
                    emit("redelivered", **describe(again))
                    stage[0] = "ack"
                    consumer.ack(again)
                    emit("acked", message_id=again.message_id)
                    return
            emit("missing", what="redelivery")
        finally:
            consumer.shutdown()

    run(stage, scenario)


if __name__ == "__main__":
    main()
