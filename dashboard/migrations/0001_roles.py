"""The console's permission and the support / lead / admin groups."""

from django.db import migrations, models


def create_roles(apps, schema_editor):
    # Permissions are normally created after migrate (post_migrate); a data
    # migration must create them itself before granting them.
    from django.contrib.auth.management import create_permissions

    db = schema_editor.connection.alias  # the database being migrated, not the default one
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0, using=db)
        app_config.models_module = None

    from dashboard.roles import sync_roles

    sync_roles(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"), strict=False, using=db)


def remove_roles(apps, schema_editor):
    db = schema_editor.connection.alias
    apps.get_model("auth", "Group").objects.using(db).filter(name__in=["support", "lead", "admin"]).delete()


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("autoplay_storage", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Console",
            fields=[("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"))],
            options={
                "managed": False,
                "default_permissions": (),
                "permissions": [("view_console", "Can browse the support console")],
            },
        ),
        migrations.RunPython(create_roles, remove_roles),
    ]
