from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("form/", views.form),
    path("upload/", views.upload),
    path("stream/", views.stream),
    path("astream/", views.astream),
    path("ping/", views.ping),
]
