from channels.generic.websocket import AsyncWebsocketConsumer


class BenchConsumer(AsyncWebsocketConsumer):
    """Joins the group named in the path before accepting, and forwards the `text` of
    every bench.message the group receives to the client. Client frames are ignored."""

    async def connect(self):
        self.group = self.scope["url_route"]["kwargs"]["group"]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        pass

    async def bench_message(self, event):
        await self.send(text_data=event["text"])
