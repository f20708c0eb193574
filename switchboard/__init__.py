"""Switchboard's Python client: `from switchboard import Client`.

    async with Client("127.0.0.1:50051") as client:
        answer = await client.chat("hello", model="auto")
        print(answer.text)

See switchboard/client.py; the generated stubs it builds on are `service.api.switchboard.v1`.
"""

from switchboard.client import Answer, Client, Stream, SwitchboardError, answer_text, chat_request

__all__ = ["Answer", "Client", "Stream", "SwitchboardError", "answer_text", "chat_request"]
