"""The "who accessed this user lately" permission, given to the lead role (the admin role holds every permission)."""

from django.db import migrations


def grant_to_roles(apps, schema_editor):
    # Permissions are normally created after migrate (post_migrate); refresh the roles now so
    # an existing lead sees the panel without waiting for the next autoplay_bootstrap.
    from django.contrib.auth.management import create_permissions

    db = schema_editor.connection.alias  # the database being migrated, not the default one
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0, using=db)
        app_config.models_module = None
    group_model, permission_model = apps.get_model("auth", "Group"), apps.get_model("auth", "Permission")
    perm = permission_model.objects.using(db).get(
        content_type__app_label="autoplay_storage", codename="view_recent_access"
    )
    for group in group_model.objects.using(db).filter(name__in=["lead", "admin"]):
        group.permissions.add(perm)


class Migration(migrations.Migration):
    dependencies = [
        ("autoplay_storage", "0008_insight"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="auditentry",
            options={
                "default_permissions": ("view",),
                "ordering": ["-id"],
                "permissions": [("view_recent_access", "Can see which staff opened or changed a user lately")],
                "verbose_name_plural": "audit entries",
            },
        ),
        migrations.RunPython(grant_to_roles, migrations.RunPython.noop),
    ]
