# packaging.cmake: Debian packages with CPack, one per component.
#
#   cmake --build build && (cd build && cpack -G DEB)
#
# makes raftkv-server, libclerk0 and libclerk-dev .deb files for this
# machine's architecture, with their runtime dependencies found by
# dpkg-shlibdeps. tests/install/test_packages.sh checks them (and, with
# RAFTKV_PACKAGE_TEST=full, installs them on a clean Debian and runs them).
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME raftkv)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT ${RAFTKV_PACKAGE_MAINTAINER})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL server lib dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_STRIP_FILES ON) # the debug info stays in the build directory
# A shlibs file for libclerk0, so that programs linked to it depend on it.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
set(version "${PROJECT_VERSION}-1")
set(dir ${PROJECT_SOURCE_DIR}/deploy/debian)

set(CPACK_DEBIAN_SERVER_PACKAGE_NAME raftkv-server)
set(CPACK_DEBIAN_SERVER_PACKAGE_SECTION database)
# adduser: postinst makes the user raftkv.
set(CPACK_DEBIAN_SERVER_PACKAGE_DEPENDS "adduser")
# conffiles: dpkg keeps local changes to /etc/raftkv/kvserver.conf.
set(CPACK_DEBIAN_SERVER_PACKAGE_CONTROL_EXTRA
    "${dir}/postinst;${dir}/prerm;${dir}/postrm;${dir}/conffiles")
set(CPACK_DEBIAN_SERVER_DESCRIPTION
"replicated key-value store on Raft: the node and its tools
raftkv keeps one linearizable map of keys to values on 3, 5 or 7 nodes,
replicated with Raft and made durable in a write-ahead log and LMDB.
This package holds kvserver (one node, run by the systemd unit raftkv),
kvctl (the command-line client and admin tool) and kvbench (load
generator), the unit and /etc/raftkv/kvserver.conf.")

set(CPACK_DEBIAN_LIB_PACKAGE_NAME libclerk0)
set(CPACK_DEBIAN_LIB_PACKAGE_SECTION libs)
# triggers: libc's ldconfig trigger updates the loader's cache (Debian
# policy 8.1.1).
set(CPACK_DEBIAN_LIB_PACKAGE_CONTROL_EXTRA "${dir}/triggers")
set(CPACK_DEBIAN_LIB_DESCRIPTION
"client library of the raftkv replicated key-value store
libclerk talks to a raftkv cluster: it finds the leader, retries with
the same request id so that each write is applied once, and gives
ranges, transactions, watches, leases and locks. Shared library.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libclerk-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# raftkv-clerk.pc requires these (Requires.private), for --cflags as well.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "libclerk0 (= ${version}), libprotobuf-c-dev, libevent-dev, libssl-dev")
set(CPACK_DEBIAN_DEV_DESCRIPTION
"client library of the raftkv replicated key-value store (development)
libclerk talks to a raftkv cluster. This package holds the headers
(clerk/clerk.h), the static library and the pkg-config file
raftkv-clerk.")

include(CPack)
