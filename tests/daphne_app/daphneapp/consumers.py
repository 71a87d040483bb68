from channels.generic.websocket import AsyncWebsocketConsumer


class GroupConsumer(AsyncWebsocketConsumer):
    """Joins the group named in the path. A text frame "send:<text>" is sent to the group
    with group_send as {"type": "chat.message", "text": <text>}; every chat.message the
    group receives is sent to the client."""

    async def connect(self):
        self.group = self.scope["url_route"]["kwargs"]["group"]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        if text_data and text_data.startswith("send:"):
            await self.channel_layer.group_send(self.group, {"type": "chat.message", "text": text_data[5:]})

    async def chat_message(self, event):
        await self.send(text_data=event["text"])
