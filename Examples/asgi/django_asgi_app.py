"""A single-file Django project served as ASGI by `subinterp serve`, with a WebSocket route
through Django Channels.

    subinterp serve django_asgi_app:application --chdir Examples/asgi --workers 2

Settings come from settings.configure(), there is no database, and each worker interpreter
imports this module, so each has its own configured Django. HTTP goes to Django's own ASGI
handler (sync views run in its thread, async views in the worker's loop); `/ws/echo` is a
Channels consumer (Channels loads in a sub-interpreter; it needs no channel layer here).
"""

import asyncio
import os

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "subinterp-example-not-secret"),
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["channels"],
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        DATABASES={},
        USE_TZ=True,
    )

import django  # noqa: E402

django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def index(request):
    return JsonResponse({"hello": "world", "framework": "django"})


async def greet(request, name):
    await asyncio.sleep(0)
    return HttpResponse(f"Hello, {name}!\n", content_type="text/plain; charset=utf-8")


def info(request):
    return JsonResponse({
        "method": request.method,
        "path": request.path,
        "query": request.GET.dict(),
        "host": request.get_host(),
        "body_length": len(request.body),
    })


urlpatterns = [
    path("", index),
    path("hello/<str:name>", greet),
    path("info", info),
]


class EchoConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        if text_data is not None:
            await self.send(text_data=f"django echo: {text_data}")
        else:
            await self.send(bytes_data=bytes_data)


application = ProtocolTypeRouter({
    "http": get_asgi_application(),
    "websocket": URLRouter([path("ws/echo", EchoConsumer.as_asgi())]),
})
