"""A single-file Django project for `subinterp serve`.

    subinterp serve django_app:application --chdir Examples/wsgi --workers 4

Settings come from settings.configure(), the URL patterns are in this module (ROOT_URLCONF
names it), and there is no database. Each worker interpreter imports this module, so each has
its own configured Django.
"""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse, JsonResponse
from django.urls import path

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "subinterp-example-not-secret"),
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        DATABASES={},
        USE_TZ=True,
    )


def index(request):
    return JsonResponse({"hello": "world", "framework": "django"})


def greet(request, name):
    return HttpResponse(f"Hello, {name}!\n", content_type="text/plain; charset=utf-8")


def info(request):
    return JsonResponse({
        "method": request.method,
        "path": request.path,
        "query": request.GET.dict(),
        "host": request.get_host(),
    })


urlpatterns = [
    path("", index),
    path("hello/<str:name>", greet),
    path("info", info),
]

application = get_wsgi_application()
