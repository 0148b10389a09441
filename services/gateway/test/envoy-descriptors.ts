/**
 * Envoy's API as @bufbuild/protobuf descriptors, built from the .proto files that
 * `@grpc/grpc-js-xds` ships (no Envoy binary is available from any registry).
 *
 * protobufjs parses the files (it tolerates the protoc-gen-validate options that the shipped
 * validate.proto is too old to define, which stops `buf build`); its reflection objects are then
 * written as one FileDescriptorProto per source file, with fully qualified type names and imports
 * derived from the types actually referenced. google.protobuf types come from @bufbuild/protobuf's
 * own well-known types, so their JSON forms (Duration "5s", Any with "@type", Struct) follow the
 * proto3 JSON mapping exactly. Only what JSON parsing needs is kept: messages, fields, oneofs,
 * maps, enums; options (validation rules, annotations) are left out.
 */
import { accessSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative } from "node:path";
import {
  type DescFile,
  type FileRegistry,
  type MessageInitShape,
  create,
  createFileRegistry,
} from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import * as wkt from "@bufbuild/protobuf/wkt";
import {
  type DescriptorProto,
  DescriptorProtoSchema,
  type EnumDescriptorProto,
  EnumDescriptorProtoSchema,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";
import protobuf from "protobufjs";

const require = createRequire(import.meta.url);
const XDS_DEPS = join(dirname(require.resolve("@grpc/grpc-js-xds/package.json")), "deps");
/** Import roots of the shipped protos; protobufjs's own copy supplies google/protobuf/descriptor.proto. */
const ROOTS = [
  ...["envoy-api", "xds", "googleapis", "protoc-gen-validate"].map((d) => join(XDS_DEPS, d)),
  dirname(require.resolve("protobufjs/package.json")),
];

const SCALARS: Record<string, FieldDescriptorProto_Type> = {
  double: FieldDescriptorProto_Type.DOUBLE,
  float: FieldDescriptorProto_Type.FLOAT,
  int64: FieldDescriptorProto_Type.INT64,
  uint64: FieldDescriptorProto_Type.UINT64,
  int32: FieldDescriptorProto_Type.INT32,
  fixed64: FieldDescriptorProto_Type.FIXED64,
  fixed32: FieldDescriptorProto_Type.FIXED32,
  bool: FieldDescriptorProto_Type.BOOL,
  string: FieldDescriptorProto_Type.STRING,
  bytes: FieldDescriptorProto_Type.BYTES,
  uint32: FieldDescriptorProto_Type.UINT32,
  sfixed32: FieldDescriptorProto_Type.SFIXED32,
  sfixed64: FieldDescriptorProto_Type.SFIXED64,
  sint32: FieldDescriptorProto_Type.SINT32,
  sint64: FieldDescriptorProto_Type.SINT64,
};

/** File names of @bufbuild/protobuf's well-known types, by type name. */
function wellKnownFiles(): Map<string, DescFile> {
  const byType = new Map<string, DescFile>();
  for (const value of Object.values(wkt)) {
    if (typeof value !== "object" || value === null || !("kind" in value) || value.kind !== "file") continue;
    const file: DescFile = value;
    for (const t of nestedTypes(file))
      if (t.kind === "message" || t.kind === "enum") byType.set(t.typeName, file);
  }
  return byType;
}

/** The top-level type or enum containing `obj` (whose `filename` is its file). */
function topLevel(obj: protobuf.ReflectionObject): protobuf.ReflectionObject {
  let current = obj;
  while (current.parent instanceof protobuf.Type) current = current.parent;
  return current;
}

function pascal(name: string): string {
  return name.replace(/(?:^|_)([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/** Builds descriptors for the given Envoy files (paths relative to the import roots). */
export function envoyRegistry(files: readonly string[]): FileRegistry {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    for (const r of ROOTS) {
      const candidate = join(r, target);
      try {
        accessSync(candidate);
        return candidate;
      } catch {
        // not under this root
      }
    }
    return target;
  };
  root.loadSync([...files], { keepCase: true });
  root.resolveAll();

  const wellKnown = wellKnownFiles();
  const fileName = (obj: protobuf.ReflectionObject): string => {
    const full = topLevel(obj).filename ?? "";
    const base = ROOTS.find((r) => full.startsWith(r));
    return base === undefined ? full : relative(base, full);
  };
  const protos = new Map<string, FileDescriptorProto>();
  const deps = new Map<string, Set<string>>();

  const fileOf = (obj: protobuf.ReflectionObject): FileDescriptorProto => {
    const name = fileName(obj);
    let proto = protos.get(name);
    if (proto === undefined) {
      const pkg = (topLevel(obj).parent?.fullName ?? "").replace(/^\./, "");
      proto = create(FileDescriptorProtoSchema, { name, package: pkg, syntax: "proto3" });
      protos.set(name, proto);
      deps.set(name, new Set());
    }
    return proto;
  };

  /** The type name of a reference, recording the import it needs. */
  const reference = (from: string, type: protobuf.Type | protobuf.Enum): string => {
    const typeName = type.fullName.replace(/^\./, "");
    const known = wellKnown.get(typeName);
    if (known !== undefined) {
      deps.get(from)?.add(known.proto.name);
    } else {
      const target = fileName(type);
      if (target !== from) deps.get(from)?.add(target);
      visit(type);
    }
    return `.${typeName}`;
  };

  const enumProto = (e: protobuf.Enum): EnumDescriptorProto =>
    create(EnumDescriptorProtoSchema, {
      name: e.name,
      value: Object.entries(e.values).map(([name, number]) => ({ name, number })),
    });

  const messageProto = (type: protobuf.Type, file: string): DescriptorProto => {
    const nested: MessageInitShape<typeof DescriptorProtoSchema>[] = [];
    const oneofs = type.oneofsArray;
    const fields: MessageInitShape<typeof wkt.FieldDescriptorProtoSchema>[] = type.fieldsArray.map((f) => {
      const field: MessageInitShape<typeof wkt.FieldDescriptorProtoSchema> = {
        name: f.name,
        number: f.id,
        label:
          f.repeated || f.map ? FieldDescriptorProto_Label.REPEATED : FieldDescriptorProto_Label.OPTIONAL,
      };
      const valueType = (
        typeName: string,
        resolved: protobuf.Type | protobuf.Enum | null,
      ): { type: FieldDescriptorProto_Type; typeName?: string } => {
        if (resolved instanceof protobuf.Type)
          return { type: FieldDescriptorProto_Type.MESSAGE, typeName: reference(file, resolved) };
        if (resolved instanceof protobuf.Enum)
          return { type: FieldDescriptorProto_Type.ENUM, typeName: reference(file, resolved) };
        const scalar = SCALARS[typeName];
        if (scalar === undefined) throw new Error(`${type.fullName}.${f.name}: unknown type ${typeName}`);
        return { type: scalar };
      };
      if (f instanceof protobuf.MapField) {
        const entry = `${pascal(f.name)}Entry`;
        nested.push({
          name: entry,
          options: { mapEntry: true },
          field: [
            {
              name: "key",
              number: 1,
              label: FieldDescriptorProto_Label.OPTIONAL,
              ...valueType(f.keyType, null),
            },
            {
              name: "value",
              number: 2,
              label: FieldDescriptorProto_Label.OPTIONAL,
              ...valueType(f.type, f.resolvedType),
            },
          ],
        });
        Object.assign(field, {
          type: FieldDescriptorProto_Type.MESSAGE,
          typeName: `${type.fullName}.${entry}`,
        });
      } else {
        Object.assign(field, valueType(f.type, f.resolvedType));
      }
      if (f.partOf !== null) field.oneofIndex = oneofs.indexOf(f.partOf);
      if (f.options?.["proto3_optional"] === true) field.proto3Optional = true;
      return field;
    });
    for (const child of type.nestedArray) {
      if (child instanceof protobuf.Type) nested.push(messageProto(child, file));
    }
    return create(DescriptorProtoSchema, {
      name: type.name,
      field: fields,
      oneofDecl: oneofs.map((o) => ({ name: o.name })),
      nestedType: nested,
      enumType: type.nestedArray.filter((c): c is protobuf.Enum => c instanceof protobuf.Enum).map(enumProto),
    });
  };

  const visited = new Set<protobuf.ReflectionObject>();
  function visit(type: protobuf.Type | protobuf.Enum): void {
    const top = topLevel(type);
    if (visited.has(top)) return;
    visited.add(top);
    const file = fileOf(top);
    if (top instanceof protobuf.Type) file.messageType.push(messageProto(top, file.name));
    else if (top instanceof protobuf.Enum) file.enumType.push(enumProto(top));
  }

  // Every message and enum of the requested files (the roots: Bootstrap and each extension config).
  const roots: string[] = [];
  const walk = (ns: protobuf.NamespaceBase): void => {
    for (const child of ns.nestedArray) {
      if (child instanceof protobuf.Type || child instanceof protobuf.Enum) {
        const name = fileName(child);
        if (files.includes(name)) {
          visit(child);
          if (!roots.includes(name)) roots.push(name);
        }
      } else if (child instanceof protobuf.Namespace) {
        walk(child);
      }
    }
  };
  walk(root);

  for (const [name, proto] of protos) proto.dependency = [...(deps.get(name) ?? [])];
  // A FileDescriptorSet in dependency order (every file after its imports): createFileRegistry
  // with a resolver can add a file before an import that a sibling also needs.
  const wellKnownByName = new Map([...wellKnown.values()].map((f) => [f.proto.name, f.proto]));
  const ordered: FileDescriptorProto[] = [];
  const placed = new Set<string>();
  const place = (name: string): void => {
    if (placed.has(name)) return;
    placed.add(name);
    const proto = protos.get(name) ?? wellKnownByName.get(name);
    if (proto === undefined) throw new Error(`no descriptor for ${name}`);
    proto.dependency.forEach(place);
    ordered.push(proto);
  };
  roots.forEach(place);
  return createFileRegistry(create(FileDescriptorSetSchema, { file: ordered }));
}
