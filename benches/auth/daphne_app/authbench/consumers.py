from channels.generic.websocket import AsyncWebsocketConsumer


class UpdatesConsumer(AsyncWebsocketConsumer):
    """What channelgate's route does with `auth = { path = "/ws-auth/" }` and
    `groups = ["updates-{user}"]`: refuse a connection without a logged-in session (403
    before the handshake completes), join `updates-<user id>`, accept, and forward the
    `text` of each bench.message the group receives. Client frames are ignored."""

    group = None

    async def connect(self):
        user = self.scope["user"]  # resolved by AuthMiddlewareStack (session cookie)
        if not user.is_authenticated:
            await self.close()  # before accept(): daphne answers the handshake with 403
            return
        self.group = f"updates-{user.pk}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        pass

    async def bench_message(self, event):
        await self.send(text_data=event["text"])


class NoAuthConsumer(UpdatesConsumer):
    """Baseline: the same consumer without AuthMiddlewareStack, joining `updates-noauth`."""

    async def connect(self):
        self.group = "updates-noauth"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
