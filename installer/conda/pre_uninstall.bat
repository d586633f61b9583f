@echo off
rem constructor pre-uninstall (Windows .exe): remove the shortcuts the post-install created.
"%PREFIX%\python.exe" -c "import sys; from menuinst.api import remove; remove(sys.argv[1] + r'\Menu\dls-microscopy.json', target_prefix=sys.argv[1], base_prefix=sys.argv[1])" "%PREFIX%"
exit /b 0
