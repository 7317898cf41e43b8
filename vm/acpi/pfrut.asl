/*
 * Test firmware for the VM lane: ACPI Platform Firmware Runtime Update (INTC1080)
 * and Telemetry (INTC1081) devices, loaded with QEMU's -acpitable so that the
 * kernel's own drivers (drivers/acpi/pfr_update.c, pfr_telemetry.c) bind to them.
 *
 * The _DSM functions answer what those drivers evaluate (same function numbers,
 * package layouts and element types). Memory, reserved on the kernel command line
 * with memmap=2M$0x60000000 (vm/run.py):
 *   0x60000000  1 MiB  PFRU communication buffer (the driver memremaps it on write())
 *   0x60100000  4 KiB  PFRT execution-log ring (mmap'ed by user space, chunk2 base)
 *   0x60101000  4 KiB  PFRT history-log ring
 * Stage parses the capsule in the buffer the way applicable_image() walks it, checks
 * the image type and the platform id, and remembers the payload's versions;
 * Activate makes them the running versions. Both append records to the rings in the
 * simulator's format "[%06d] LEVEL   message\n". Signatures are NOT verified here.
 */
DefinitionBlock ("", "SSDT", 2, "LIVEFW", "PFRUTVM", 0x00000001)
{
    Scope (\_SB)
    {
        OperationRegion (PFCB, SystemMemory, 0x60000000, 0x4000)
        Field (PFCB, ByteAcc, NoLock, Preserve) { CBUF, 0x20000 }

        Device (PFRT)
        {
            Name (_HID, "INTC1081")
            Name (_UID, Zero)
            Name (LLEV, 4)          /* log level: verbose */
            Name (SEQN, Zero)       /* record sequence number */
            Name (HD0, Zero)        /* ring heads and rollover counts */
            Name (RO0, Zero)
            Name (HD1, Zero)
            Name (RO1, Zero)
            Name (RSTC, Zero)       /* reset count */
            Name (DATP, Package (11) { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 })

            /* six-digit, zero-padded decimal */
            Method (PAD6, 1, Serialized)
            {
                Local0 = ToDecimalString (Arg0)
                While (SizeOf (Local0) < 6)
                {
                    Local0 = Concatenate ("0", Local0)
                }
                Return (Local0)
            }

            /*
             * APND (ring, string): append the bytes of a string to ring 0 or 1.
             * The ring is mapped only while the method runs (a method-local
             * OperationRegion): a lasting cached mapping by the OS would make the
             * driver's uncached mmap of the same pages fail (x86 PAT memtype conflict,
             * io_remap_pfn_range -> EAGAIN), which real firmware, writing from SMM,
             * never causes.
             */
            Method (APND, 2, Serialized)
            {
                If (Arg0 == Zero) { Local5 = 0x60100000 }
                Else { Local5 = 0x60101000 }
                OperationRegion (RNGR, SystemMemory, Local5, 0x1000)
                Field (RNGR, ByteAcc, NoLock, Preserve) { RNGB, 0x8000 }
                Local0 = RNGB
                If (Arg0 == Zero) { Local1 = HD0 }
                Else { Local1 = HD1 }
                Local2 = Zero
                Local3 = SizeOf (Arg1)
                Local4 = Zero
                While (Local2 < Local3)
                {
                    Local0 [Local1] = DerefOf (Arg1 [Local2])
                    Local1++
                    If (Local1 >= 0x1000) { Local1 = Zero  Local4++ }
                    Local2++
                }
                RNGB = Local0
                If (Arg0 == Zero) { HD0 = Local1  RO0 += Local4 }
                Else { HD1 = Local1  RO1 += Local4 }
            }

            /* LOGR (level, name, message): an execution-log record within LLEV */
            Method (LOGR, 3, Serialized)
            {
                If (Arg0 > LLEV) { Return (Zero) }
                SEQN++
                Local0 = Concatenate (Concatenate ("[", PAD6 (SEQN)), "] ")
                Local0 = Concatenate (Concatenate (Local0, Arg1), Arg2)
                APND (Zero, Concatenate (Local0, "\n"))
                Return (One)
            }

            /* LOGH (message): a history-log record */
            Method (LOGH, 1, Serialized)
            {
                SEQN++
                Local0 = Concatenate (Concatenate ("[", PAD6 (SEQN)), "] ")
                APND (One, Concatenate (Concatenate (Local0, Arg0), "\n"))
            }

            Method (_INI, 0, Serialized)
            {
                LOGR (2, "INFO    ", "runtime firmware telemetry ready (livefw VM lane AML)")
            }

            Method (_DSM, 4, Serialized)
            {
                If (Arg0 != ToUUID ("75191659-8178-4d9d-b88f-ac5e5e93e8bf"))
                {
                    Return (Buffer (One) { Zero })
                }
                Switch (ToInteger (Arg2))
                {
                    Case (Zero) { Return (Buffer (One) { 0x0F }) }
                    Case (One)      /* set level */
                    {
                        LLEV = DerefOf (Arg3 [Zero])
                        Return (Package (2) { 0, 0 })
                    }
                    Case (2)        /* get level */
                    {
                        Return (Package (3) { 0, 0, LLEV })
                    }
                    Case (3)        /* get data info for log type Arg3[0] */
                    {
                        Local0 = DerefOf (Arg3 [Zero])
                        If (Local0 == Zero) { Local1 = 0x60100000  Local2 = HD0  Local3 = RO0 }
                        Else { Local1 = 0x60101000  Local2 = HD1  Local3 = RO1 }
                        DATP [2] = 0x1000
                        If (Local3 > Zero)
                        {
                            DATP [3] = Local1 + Local2
                            DATP [5] = 0x1000 - Local2
                        }
                        Else
                        {
                            DATP [3] = Zero
                            DATP [5] = Zero
                        }
                        DATP [4] = Zero
                        DATP [6] = Local1
                        DATP [7] = Zero
                        DATP [8] = Local2
                        DATP [9] = Local3
                        DATP [10] = RSTC
                        Return (DATP)
                    }
                }
                Return (Package (2) { 1, 0 })
            }
        }

        Device (PFRU)
        {
            Name (_HID, "INTC1080")
            Name (_UID, Zero)
            Name (FWV, 0x00010000)  /* firmware version */
            Name (RTV, 16)          /* code injection runtime version */
            Name (DRV, 3)           /* driver update runtime version */
            Name (SVN, 2)           /* driver update security version */
            Name (STGT, Zero)       /* staged: 0 nothing, 1 code injection, 2 driver update */
            Name (STGV, Zero)       /* staged runtime version */
            Name (STGS, Zero)       /* staged svn */
            Name (UCAP, Package (11) {
                0, 3, Buffer (16) {}, 0, 0, Buffer (16) {}, 0, 0, Buffer (16) {},
                Buffer (16) {}, Buffer (4) { 0x4C, 0x46, 0x56, 0x4D } })
            Name (UPDP, Package (6) { 0, 0, 0, 0, 0, 0 })

            Method (RSLT, 2, Serialized)
            {
                UPDP [Zero] = Arg0
                UPDP [One] = Arg1
                Return (UPDP)
            }

            /* STAG: walk the capsule like applicable_image(); 0 on success */
            Method (STAG, 0, Serialized)
            {
                Local0 = CBUF
                CreateDWordField (Local0, 16, HSZ)
                Local1 = HSZ                            /* FMP capsule header */
                If (Local1 > 0x3F00) { Return (2) }
                CreateWordField (Local0, Local1 + 4, EMBC)
                CreateWordField (Local0, Local1 + 6, PAYC)
                Local2 = Local1 + 8 + ((EMBC + PAYC) * 8)  /* FMP image header */
                If (Local2 > 0x3F00) { Return (2) }
                CreateDWordField (Local0, Local2, IVER)
                Local3 = Mid (Local0, Local2 + 4, 16)
                If (Local3 == ToUUID ("b2f84b79-7b6e-4e45-885f-3fb9bb185402")) { Local4 = One }
                ElseIf (Local3 == ToUUID ("4569dd8c-75f1-429a-a3d6-24de8097a0df")) { Local4 = 2 }
                Else { Return (2) }
                If (IVER == One) { Local5 = Local2 + 32 }
                ElseIf (IVER == 2) { Local5 = Local2 + 40 }
                Else { Return (2) }
                If (Local5 > 0x3F00) { Return (2) }
                CreateDWordField (Local0, Local5 + 8, AULN)  /* WIN_CERTIFICATE dwLength */
                Local6 = Local5 + 8 + AULN                   /* pfru_payload_hdr */
                If (Local6 > 0x3F00) { Return (2) }
                CreateDWordField (Local0, Local6 + 16, PRTV)
                CreateDWordField (Local0, Local6 + 36, PSVN)
                If (Mid (Local0, Local6 + 20, 16) != ToUUID ("6c6976ef-6677-4d00-8000-766d6c616e65"))
                {
                    \_SB.PFRT.LOGR (Zero, "ERROR   ", "stage refused: capsule for another platform")
                    Return (2)
                }
                STGT = Local4
                STGV = PRTV
                STGS = PSVN
                \_SB.PFRT.LOGR (2, "INFO    ", Concatenate ("staged runtime version ", ToDecimalString (PRTV)))
                Return (Zero)
            }

            /* ACTV: make the staged versions the running ones; 0 on success */
            Method (ACTV, 0, Serialized)
            {
                If (STGT == Zero)
                {
                    \_SB.PFRT.LOGR (Zero, "ERROR   ", "activate refused: nothing staged")
                    Return (2)
                }
                If (STGT == One)
                {
                    Local0 = Concatenate ("activate code injection: ", ToDecimalString (RTV))
                    RTV = STGV
                }
                Else
                {
                    Local0 = Concatenate ("activate driver update: ", ToDecimalString (DRV))
                    DRV = STGV
                    SVN = STGS
                }
                Local0 = Concatenate (Concatenate (Local0, " -> "), ToDecimalString (STGV))
                STGT = Zero
                \_SB.PFRT.LOGR (2, "INFO    ", Local0)
                \_SB.PFRT.LOGH (Concatenate (Local0, ": success"))
                Return (Zero)
            }

            Method (_DSM, 4, Serialized)
            {
                If (Arg0 != ToUUID ("ecf9533b-4a3c-4e89-939e-c77112601c6d"))
                {
                    Return (Buffer (One) { Zero })
                }
                Switch (ToInteger (Arg2))
                {
                    Case (Zero) { Return (Buffer (One) { 0x0F }) }
                    Case (One)      /* query update capability */
                    {
                        UCAP [2] = ToUUID ("b2f84b79-7b6e-4e45-885f-3fb9bb185402")
                        UCAP [3] = FWV
                        UCAP [4] = RTV
                        UCAP [5] = ToUUID ("4569dd8c-75f1-429a-a3d6-24de8097a0df")
                        UCAP [6] = DRV
                        UCAP [7] = SVN
                        UCAP [8] = ToUUID ("6c6976ef-6677-4d00-8000-766d6c616e65")
                        UCAP [9] = ToUUID ("6c6976ef-6f65-4d00-8000-766d6c616e65")
                        Return (UCAP)
                    }
                    Case (2)        /* communication buffer */
                    {
                        Return (Package (5) { 0, 0, 0x60000000, 0, 0x00100000 })
                    }
                    Case (3)        /* start: Arg3[0] 0 stage, 1 activate, 2 both */
                    {
                        Local0 = DerefOf (Arg3 [Zero])
                        Local1 = Zero
                        If ((Local0 == Zero) || (Local0 == 2)) { Local1 = STAG () }
                        If ((Local1 == Zero) && ((Local0 == One) || (Local0 == 2))) { Local1 = ACTV () }
                        Return (RSLT (Local1, Zero))
                    }
                }
                Return (Package (2) { 1, 0 })
            }
        }
    }
}
